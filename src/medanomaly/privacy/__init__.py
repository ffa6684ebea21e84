"""DICOM de-identification: PS3.15 Annex E profile, keyed pseudonyms, burned-in text, audit.

Modules (imported where used, so ``import medanomaly`` stays fast):

* :mod:`medanomaly.privacy.profile`: the Annex E table (``annex_e.json``) and its options.
* :mod:`medanomaly.privacy.uids`: keyed UID remapping and the file meta fix.
* :mod:`medanomaly.privacy.pseudonym`: key loading, pseudonyms, date shifts, encrypted lookup.
* :mod:`medanomaly.privacy.burned_in`: text detection, OCR, blanking and verification in pixels.
* :mod:`medanomaly.privacy.audit`: the PHI-free JSON audit of a run.
* :mod:`medanomaly.privacy.deid`: the folder driver behind ``medanomaly deid IN OUT``.

See ``docs/privacy.md``.
"""
