"""DICOM de-identification: PS3.15 Annex E profile, keyed pseudonyms, burned-in text, audit.

Modules (imported where used, so ``import medanomaly`` stays fast):

* :mod:`medanomaly.privacy.profile`: de-identify one data set (the entry point of the header part).
* :mod:`medanomaly.privacy.table`: the Annex E table (``annex_e.json``, 2026c) and its options.
* :mod:`medanomaly.privacy.allowlist`: what survives of elements the table does not list.
* :mod:`medanomaly.privacy.walker`: applies table and allowlist to every element and sequence item.
* :mod:`medanomaly.privacy.freetext`: identifying terms and the Clean scrubber.
* :mod:`medanomaly.privacy.dates`: per-patient date shifts.
* :mod:`medanomaly.privacy.uids`: keyed UID remapping and the file meta fix.
* :mod:`medanomaly.privacy.pseudonym`: key loading, pseudonyms, date shifts, encrypted lookup.
* :mod:`medanomaly.privacy.burned_in`: text detection, OCR, blanking and verification in pixels.
* :mod:`medanomaly.privacy.audit`: the PHI-free JSON audit of a run.
* :mod:`medanomaly.privacy.one_file`: one file in memory (checks, pixels, profile, file meta).
* :mod:`medanomaly.privacy.batch`: lock, resume record, manifest, audit files, worker pool.
* :mod:`medanomaly.privacy.deid`: the folder driver behind ``medanomaly deid IN OUT``.

See ``docs/privacy.md``.
"""
