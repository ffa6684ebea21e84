"""De-identify one DICOM file in memory: checks, burned-in text, header profile, file meta.

:func:`deidentify_file` reads a file, refuses it with a fixed reason when it must not be released
(:class:`Refused`: unreadable, no pixel data, missing UIDs, too large, undecodable pixels, text
left after redaction), redacts burned-in text, applies the header profile
(:func:`medanomaly.privacy.profile.deidentify_dataset`) and rebuilds the file meta and preamble.
Nothing is written; the folder driver (:mod:`medanomaly.privacy.deid`) does that.

Example:
    >>> DeidConfig().max_file_mb
    2048
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medanomaly.privacy.burned_in import RedactionResult
from medanomaly.privacy.profile import ProfileOptions, deidentify_dataset, phi_terms, set_method
from medanomaly.privacy.uids import fix_file_meta
from medanomaly.privacy.walker import TOO_DEEP, NestedTooDeep

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

#: Largest accepted file size limit, MB (2^20 MB = 1 TiB).
MAX_FILE_MB = 1 << 20


#: Objects without pixels whose every attribute the profile's table covers: key object selection documents, RT
#: Structure Sets (contours are numbers; ROI Name is emptied, Structure Set Label dummied, ROI Interpreter, ROI and
#: observation descriptions removed, as Table E.1-1 says; references remapped with the images' UIDs) and Spatial
#: Registrations (a fusion call's REG: matrices are numbers, each frame of reference and image reference remapped with
#: the images' key, Content Description removed, Content Creator's Name emptied).
_PIXELLESS = frozenset({"Key Object Selection Document Storage", "RT Structure Set Storage",
                        "Spatial Registration Storage"})


def is_document(ds) -> bool:
    """True for an object without pixels that the profile covers whole: a structured report (everything it says is
    in its Content Sequence, which the profile dummies: text, names, dates replaced; codes, numbers and references
    kept), a key object selection document, an RT Structure Set or a Spatial Registration. Other objects without
    pixels (encapsulated PDF or CDA, waveforms, RT plans) carry content the profile cannot check and stay refused."""
    from pydicom.uid import UID

    name = UID(str(ds.get("SOPClassUID", "") or "")).name
    return name.endswith("SR Storage") or name in _PIXELLESS


@dataclass(frozen=True)
class DeidConfig:
    """Run settings.

    Attributes:
        options: header profile options.
        burned_in: ``auto`` (respect BurnedInAnnotation; scan US/SC/OT... when absent),
            ``always`` or ``never``.
        redact: ``all`` text regions (default) or only those OCR reads as ``phi``.
        ocr_check: after redaction, OCR the whole first frame as an independent check.
        max_file_mb: larger files are refused (MB = 2**20 bytes).
        lookup: optional encrypted re-identification lookup file to create/extend.
    """

    options: ProfileOptions = field(default_factory=ProfileOptions)
    burned_in: str = "auto"
    redact: str = "all"
    ocr_check: bool = True
    max_file_mb: float = 2048
    lookup: Path | None = None

    def __post_init__(self) -> None:
        """A file size limit no file can be judged by is refused (NaN turned the limit off, -1 refused every file)."""
        import math

        from medanomaly.errors import InputError

        if not (math.isfinite(self.max_file_mb) and 0 < self.max_file_mb <= MAX_FILE_MB):
            raise InputError(f"the file size limit (--max-size-mb) must be above 0 and at most {MAX_FILE_MB:,} MB, "
                             f"got {self.max_file_mb:g}")  # fmt: skip

    def describe(self) -> dict:
        """Settings for the audit (no key, no lookup path)."""
        opts = asdict(self.options)
        opts["safe_private"] = sorted(f"{c}:{e:02X}" for c, e in self.options.safe_private)
        return {
            **opts,
            "burned_in": self.burned_in,
            "redact": self.redact,
            "ocr_check": self.ocr_check,
            "max_file_mb": self.max_file_mb,
            "lookup_file": self.lookup is not None,
        }

    def record_settings(self) -> dict:
        """The settings that decide the output bytes (the resume record compares them)."""
        settings = self.describe()
        for name in ("max_file_mb", "lookup_file"):
            settings.pop(name)
        return settings



class Refused(Exception):
    """A file the run will not release; ``reason`` is one of :data:`audit.REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FileResult:
    """One de-identified dataset, ready to write (``outcome`` holds in-memory identity only)."""

    dataset: object
    outcome: object
    redaction: object
    relpath: str


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value validation while we work: its warnings can quote element values (PHI)."""
    from pydicom import config as pconfig

    settings = pconfig.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pconfig.IGNORE
    settings.writing_validation_mode = pconfig.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def deidentify_file(path: str | Path, key: bytes, config: DeidConfig | None = None) -> FileResult:
    """De-identify one file in memory (nothing written); pydicom warnings are silenced (PHI).

    Raises:
        Refused: with a fixed reason, for files that must not be released.
    """
    with quiet_pydicom():
        return _deidentify_file(Path(path), key, config or DeidConfig())


_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _deidentify_file(path: Path, key: bytes, config: DeidConfig) -> FileResult:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = path.stat().st_size
    except OSError:
        raise Refused("not a readable DICOM file") from None
    if size > config.max_file_mb * 2**20:
        raise Refused("file larger than the size limit")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = _without_file_meta(path)
    except Exception:  # noqa: BLE001 - any reader failure: refuse, go on
        raise Refused("not a readable DICOM file") from None
    document = is_document(ds)
    if not document and not any(t in ds for t in _PIXEL_TAGS):
        raise Refused("no pixel data")
    if not all(str(ds.get(k, "") or "").strip() for k in _REQUIRED_UIDS):
        # The output path and the UID remap need them; such files are not valid image instances.
        raise Refused("missing a required UID (SOP Class, SOP Instance, Study or Series)")
    if _truncated(ds):
        raise Refused("pixel data cannot be decoded")
    redaction = RedactionResult(scanned=False) if document else _redact(ds, config)
    try:
        outcome = deidentify_dataset(ds, key, config.options)
        set_method(ds, config.options, pixels_cleaned=redaction.changed)
        fix_file_meta(ds)
    except NestedTooDeep:
        raise Refused(TOO_DEEP) from None
    except Exception:  # noqa: BLE001 - never echo a value; the audit gets a fixed reason
        raise Refused("de-identification failed") from None
    rel = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    return FileResult(ds, outcome, redaction, rel)


def _without_file_meta(path: Path):
    """A dataset stored without the preamble and file meta (old ACR-NEMA style, some archives' exports; pydicom's
    ``rtstruct.dcm`` and ``OT-PAL-8-face.dcm``), parsed as the image readers take it (:func:`medanomaly.io.dicom.
    read_dataset`: only when it names its SOP class), its transfer syntax the encoding the parse found
    (:func:`medanomaly.io.dicom.ensure_transfer_syntax`).

    Raises:
        Refused: not a DICOM dataset.
    """
    import pydicom

    from medanomaly.io.dicom import ensure_transfer_syntax

    try:
        ds = pydicom.dcmread(path, force=True)
        implicit, little = ds.original_encoding
        if "SOPClassUID" not in ds or (implicit and not little):
            raise ValueError("no SOP class")
    except Exception:  # noqa: BLE001 - any reader failure: refuse, go on
        raise Refused("not a readable DICOM file") from None
    ensure_transfer_syntax(ds)
    return ds


def _redact(ds, config: DeidConfig) -> RedactionResult:
    """Burned-in text found and blanked in an image's pixels (:mod:`medanomaly.privacy.burned_in`)."""
    from medanomaly.privacy.burned_in import needs_scan, redact_dataset

    try:
        terms = phi_terms(ds) if needs_scan(ds, config.burned_in) else []
    except Exception:  # noqa: BLE001 - a malformed header value: refuse, never print it
        raise Refused("not a readable DICOM file") from None
    flagged = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    try:
        redaction = redact_dataset(
            ds, terms=terms, policy=config.burned_in, mode=config.redact, ocr_check=config.ocr_check
        )
    except Exception:  # noqa: BLE001 - missing codec, corrupt stream, odd geometry
        raise Refused("pixel data cannot be decoded") from None
    if redaction.residual_phi:
        raise Refused("burned-in text remains after redaction")
    if flagged and redaction.scanned and not redaction.regions:
        # the device says there is text and we see none: our detector may have missed it
        raise Refused("burned-in annotation flagged but no text found (review by hand)")
    return redaction


def _truncated(ds) -> bool:
    """True when native (uncompressed) Pixel Data is shorter than its rows x columns x frames x samples."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or tsyntax is None or tsyntax.is_compressed:
        return False
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return True
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        n = n * 2 // 3  # two chroma samples shared by each pair of pixels
    expected = (n * bits + 7) // 8
    return len(ds.PixelData) < expected
