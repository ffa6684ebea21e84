"""Walk an image archive (a folder tree of DICOM files, NIfTI, NRRD) and group it into series.

What the walk does, and why:

* **Safe walk**: directories are entered by their real identity (device, inode), so a symlink
  loop or a link back to a parent is entered once; a file reached through two links is indexed
  once; names that are not valid UTF-8 are kept as bytes-preserving ``str`` (surrogate escapes)
  and shown escaped; unreadable folders and files are reported, not fatal.
* **Headers only**: each DICOM file is parsed without its pixel data (``stop_before_pixels``);
  NIfTI/NRRD/MetaImage headers are read with SimpleITK without the voxels. Memory grows with
  the number of files (a few hundred bytes each), never with image size.
* **Grouped by UID, not by folder**: files are grouped by SeriesInstanceUID (and the study they
  belong to), wherever they lie; a NIfTI/NRRD file is a series of its own, keyed by a hash of its
  content (never its name, which may carry a patient name).
* **Non-image objects** (SR, RT plan/structure/dose, presentation states, key objects, SEG,
  DICOMDIR...) and files that are not DICOM are reported with their reason and skipped.

The output (:class:`ArchiveIndex`) lists :class:`SeriesEntry` objects with what series selection
needs (modality, orientation, slice thickness, kernel, image type, size) and the estimated
memory of the series as float32, so a series too large is refused by UID before it is read.

Example:
    >>> index = walk_archive("/data/archive")                 # doctest: +SKIP
    >>> [(s.key, s.modality, s.n_frames) for s in index.series]  # doctest: +SKIP
    [('1.2.826...', 'CT', 120)]
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError
from medanomaly.io.dicom import modality_code
from medanomaly.io.frames import check_volume, reword_frame_advice

log = logging.getLogger(__name__)

__all__ = ["FRAME_ALONE_ADVICE", "HEADER_KEYWORDS", "ArchiveIndex", "Problem", "SeriesEntry", "display_path",
           "entry_from_datasets", "iter_files", "lasting_patient_secret", "patient_key", "read_series", "walk_archive"]

#: Modalities of DICOM objects that are not images to run a model on.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "RTPLAN", "RTSTRUCT", "RTDOSE", "RTRECORD", "RTIMAGE", "PR", "KO", "SEG", "REG", "FID",
     "DOC", "PLAN", "RWV", "AU", "ECG", "HD", "OT_SR"}
)  # fmt: skip
#: SOP class UID prefixes of non-image objects (SR documents, RT objects, presentation states...).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.481.",  # radiotherapy objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, SEG
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.30",  # parametric map
    "1.2.840.10008.1.3.10",  # media storage directory (DICOMDIR)
)
#: How an archive run, which takes no ``--frame``, says to take one frame of a cine or one volume of a 4D file.
FRAME_ALONE_ADVICE = "predict its file alone with `medanomaly predict RUN FILE --frame N`"
#: Most characters of a header text a series keeps (SeriesDescription, ConvolutionKernel, BodyPartExamined): DICOM's
#: LO holds 64 a value; a hostile file's megabytes would be matched by every selection rule and pairing expression.
MAX_TEXT = 128
#: File endings of volume files that are a series on their own.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".mgh", ".mgz", ".mnc", ".par", ".head", ".nrrd", ".nhdr", ".mha", ".mhd")
#: DICOM header keywords kept per file (technical only; never identity).
HEADER_KEYWORDS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "Modality", "Rows", "Columns", "NumberOfFrames",
    "BitsAllocated", "SamplesPerPixel", "SliceThickness", "ConvolutionKernel", "ImageType",
    "ImageOrientationPatient", "BodyPartExamined", "SeriesDescription", "PatientID", "IssuerOfPatientID",
)  # fmt: skip

#: The secret of :func:`patient_key`, new in each process: its keys pair one run's series and mean nothing after it.
_PATIENT_KEY_SECRET = os.urandom(32)


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, printable: bytes that are not UTF-8 shown as ``\\xNN``."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # pragma: no cover - other drive on Windows
        rel = str(path)
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Problem:
    """A file or series that could not be used: where (relative path or series key) and why."""

    where: str
    reason: str
    kind: str = "file"  # "file" | "series"


@dataclass
class SeriesEntry:
    """One image series of the archive (technical fields only; no patient identity).

    Attributes:
        key: SeriesInstanceUID for DICOM; ``file-<content hash>`` for a NIfTI/NRRD/MetaImage file.
        study_uid: StudyInstanceUID (DICOM), else None.
        kind: ``"dicom"`` or ``"volume"`` (a NIfTI/NRRD/MetaImage file).
        files: the files of the series (absolute paths).
        modality: DICOM Modality ("CT", "MR", ...), "OT" when unknown.
        rows / columns / n_frames: image size; ``n_frames`` sums frames over files (slices).
        bytes_per_sample / samples: stored pixel size (bytes) and samples per pixel.
        slice_thickness: mm, when given.
        kernel: ConvolutionKernel text ("" when absent).
        image_type: ImageType values ("ORIGINAL", "PRIMARY", "AXIAL", "LOCALIZER"...).
        orientation: "axial" | "coronal" | "sagittal" | "oblique" | "" (from ImageOrientationPatient).
        body_part: BodyPartExamined ("" when absent).
        description: SeriesDescription, used only for selection rules, never written to results.
        patient_key: which patient the series is of, as a keyed hash of PatientID and its issuer whose secret is new
            in each process (:func:`patient_key`), for pairing a patient's studies; never written (but by the DICOM
            node for its lone sets, when the secret is derived from the user's key); None when the header names no
            patient.
    """

    key: str
    study_uid: str | None
    kind: str
    files: list[Path] = field(default_factory=list)
    modality: str = "OT"
    rows: int = 0
    columns: int = 0
    n_frames: int = 0
    bytes_per_sample: int = 2
    samples: int = 1
    slice_thickness: float | None = None
    kernel: str = ""
    image_type: tuple[str, ...] = ()
    orientation: str = ""
    body_part: str = ""
    description: str = ""
    patient_key: str | None = None

    @property
    def series_uid(self) -> str | None:
        """The SeriesInstanceUID (DICOM series), else None."""
        return self.key if self.kind == "dicom" else None

    @property
    def estimated_bytes(self) -> int:
        """Memory of the series as the float32 volume a model works on: rows x columns x frames x
        samples x max(stored bytes, 4). Computed from headers, before any pixel is read."""
        return self.rows * self.columns * max(self.n_frames, 1) * self.samples * max(self.bytes_per_sample, 4)


@dataclass
class ArchiveIndex:
    """The series of an archive and the problems met while walking it."""

    root: Path
    series: list[SeriesEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_files: int = 0
    data_files: set[Path] = field(default_factory=set)  # volumes' voxel files beside their headers (.img, .raw)


def iter_files(root: Path, problems: list[Problem]) -> Iterator[Path]:
    """Every regular file under ``root`` once, following links safely: loops are entered once, and a link that leads
    out of the archive is not followed (a link to ``/`` or ``/etc`` made the walk read the whole file system).

    Hidden entries (names starting with ".") are skipped. Folders that cannot be listed, dangling links, links
    out of the archive and entries that are no regular file (a named pipe, a device, a socket) are added to
    ``problems``.
    """
    inside = root.resolve()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen_dirs:
                continue  # a symlink loop or a second link to a folder already walked
            seen_dirs.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(display_path(Path(folder), root), f"cannot list folder ({exc.strerror})"))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(inside):
                problems.append(Problem(display_path(Path(entry.path), root), "link out of the archive: not followed"))
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                problems.append(Problem(display_path(Path(entry.path), root), f"unreachable ({exc.strerror})"))
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(Path(entry.path))
            elif not stat.S_ISREG(st.st_mode):  # a named pipe would make a read wait for a writer
                problems.append(Problem(display_path(Path(entry.path), root),
                                        "not a regular file (a device, a named pipe or a socket)"))  # fmt: skip
            elif (st.st_dev, st.st_ino) not in seen_files:
                seen_files.add((st.st_dev, st.st_ino))
                yield Path(entry.path)
        stack.extend(reversed(subdirs))


def _orientation(iop: Any) -> str:
    """axial / coronal / sagittal / oblique from ImageOrientationPatient (6 direction cosines)."""
    import numpy as np

    try:
        values = [float(v) for v in iop]
    except (TypeError, ValueError):
        return ""
    if len(values) != 6:
        return ""
    normal = np.abs(np.cross(values[:3], values[3:]))
    axis = int(np.argmax(normal))
    if normal[axis] < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _text(value: Any) -> str:
    """A header value as text: values joined by a backslash; bytes (a value too long for its VR, written as UN)
    decoded, never their ``b'...'`` repr."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00 ")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value)
    return str(value)


def _dicom_header(path: Path) -> dict[str, Any]:
    """Selected header fields of one DICOM file (no pixel data read); InputError when unreadable."""
    from medanomaly.io.dicom import read_dataset

    ds = read_dataset(path, stop_before_pixels=True)
    return {kw: ds.get(kw) for kw in HEADER_KEYWORDS}


def _non_image_reason(h: dict[str, Any]) -> str | None:
    """Why a DICOM object is not an image to run on (None when it is one)."""
    modality = modality_code(h.get("Modality"))
    sop = str(h.get("SOPClassUID") or "")
    if modality in NON_IMAGE_MODALITIES or any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
        return f"non-image DICOM object ({modality or 'SOP class ' + sop}): skipped"
    if not h.get("Rows") or not h.get("Columns"):
        return f"DICOM object without an image ({modality or 'no modality'}): skipped"
    return None


def _new_dicom_entry(h: dict[str, Any], patient_secret: bytes | None = None) -> SeriesEntry:
    thickness = h.get("SliceThickness")
    try:
        thickness_mm = float(thickness) if thickness not in (None, "") else None
    except (TypeError, ValueError):
        thickness_mm = None
    return SeriesEntry(
        key=str(h["SeriesInstanceUID"]),
        study_uid=str(h.get("StudyInstanceUID") or "") or None,
        kind="dicom",
        modality=modality_code(h.get("Modality"), "OT"),
        rows=int(h.get("Rows") or 0),
        columns=int(h.get("Columns") or 0),
        bytes_per_sample=max(int(h.get("BitsAllocated") or 16) // 8, 1),
        samples=int(h.get("SamplesPerPixel") or 1),
        slice_thickness=thickness_mm,
        kernel=_text(h.get("ConvolutionKernel"))[:MAX_TEXT],
        image_type=tuple(_text(h.get("ImageType")).upper().split("\\")) if h.get("ImageType") else (),
        orientation=_orientation(h.get("ImageOrientationPatient")),
        body_part=_text(h.get("BodyPartExamined"))[:MAX_TEXT],
        description=_text(h.get("SeriesDescription"))[:MAX_TEXT],
        patient_key=patient_key(h, patient_secret),
    )


def patient_key(h: dict[str, Any], secret: bytes | None = None) -> str | None:
    """A series' patient as HMAC-SHA256 of its PatientID and IssuerOfPatientID under a secret new in each process: two
    series of one patient get one key in a run, and the key cannot be turned back into the id (a plain hash of a
    hospital's short record numbers could be, by trying them all) nor matched across runs. With ``secret``
    (:func:`lasting_patient_secret` of the user's key) the key is the same in every run with that key. None without a
    PatientID.

    Example:
        >>> patient_key({"PatientID": "12345"}) == patient_key({"PatientID": "12345"}) != patient_key({"PatientID": "1"})
        True
    """
    import hmac

    patient = _text(h.get("PatientID")).strip()
    if not patient:
        return None
    issuer = _text(h.get("IssuerOfPatientID")).strip()
    return hmac.new(secret or _PATIENT_KEY_SECRET, f"{issuer}\x1f{patient}".encode(), hashlib.sha256).hexdigest()[:32]


def lasting_patient_secret(key: bytes) -> bytes:
    """The secret of :func:`patient_key` derived from the user's key (``--keyed-ids``): patient keys that last across
    runs (the DICOM node's lone sets, :mod:`medanomaly.deploy.pair_wait`), unlike any id or pseudonym made with the key
    itself."""
    import hmac

    return hmac.new(key, b"medanomaly-patient-key", hashlib.sha256).digest()


def entry_from_datasets(datasets: Any) -> SeriesEntry | str:
    """A :class:`SeriesEntry` (no files yet) from the headers of one series' instances, e.g. WADO-RS
    metadata; or the reason (str) why the series is not an image series to run on."""
    headers = [{kw: ds.get(kw) for kw in HEADER_KEYWORDS} for ds in datasets]
    if not headers:
        return "series without instances"
    reason = _non_image_reason(headers[0])
    if reason is not None:
        return reason
    if not headers[0].get("SeriesInstanceUID"):
        return "DICOM image without SeriesInstanceUID"
    entry = _new_dicom_entry(headers[0])
    entry.n_frames = sum(int(h.get("NumberOfFrames") or 1) for h in headers)
    return entry


def content_key(path: Path, root: Path, data_files: Sequence[Path] = (), chunk: int = 1 << 20) -> str:
    """``file-<sha256 of its place in the archive + size + first MiB>``: an id of a volume file that does not reveal
    its name. The place makes it one per file: two copies of one volume (or two volumes of one size whose first MiB,
    header and air, agree) shared a key, and the batch then skipped both ("not selected: study's detection series is
    file-...", naming the key they shared), processing neither."""
    digest = hashlib.sha256()
    digest.update(os.fsencode(path.relative_to(root)) + b"\0")
    for part in (path, *data_files):  # a header's voxels in files of their own (:func:`_data_files`) are its content
        digest.update(str(part.stat().st_size).encode())
        with part.open("rb") as fh:
            digest.update(fh.read(chunk))
    return "file-" + digest.hexdigest()[:24]


def _data_files(path: Path) -> list[Path]:
    """The files holding a header's voxels: a NIfTI pair's .img, an .nhdr's or .mhd's detached data (numbered or
    listed files: the first; regular files only); none for a file that holds its own. Their content was not in the
    key, so a rerun after the voxels were replaced (the header unchanged) reused the old result.

    Raises:
        InputError: a header naming a data file outside its folder (:func:`medanomaly.io.detached.check_detached_data`).
    """
    from medanomaly.io.detached import check_detached_data, detached_names

    pairs = {".hdr": ".img", ".par": ".rec"}  # a NIfTI pair's, a PAR/REC's voxels beside their header
    if path.suffix.lower() == ".head":  # an AFNI dataset's .BRIK (or .BRIK.gz)
        from medanomaly.io.neuro import afni_files

        try:
            return [afni_files(path)[1]]
        except InputError:
            return []
    if path.suffix.lower() in pairs:
        data = pairs[path.suffix.lower()]
        return [p for p in (path.with_suffix(data), path.with_suffix(data.upper())) if p.is_file()][:1]
    if path.suffix.lower() in (".nhdr", ".mhd"):
        check_detached_data(path)  # a name outside the header's folder: refused here, before any read
        return [p for p in (path.parent / n for n in detached_names(path)[:1]) if p.is_file()]
    return []


def _volume_entry(path: Path, root: Path, data_files: Sequence[Path] = ()) -> SeriesEntry:
    """A NIfTI/MGH/MINC/PAR-REC/AFNI/NRRD/MetaImage file as a series (header only, no voxels): NIfTI, MGH, MINC, PAR/REC, AFNI
    read by nibabel as ``io.read`` reads them (SimpleITK took the qform where a file sets its sform, and could not open
    a name that is not UTF-8), NRRD and MetaImage by SimpleITK."""
    import SimpleITK as sitk

    from medanomaly.io.itk import itk_format, itk_path
    from medanomaly.io.neuro import neuro_kind
    from medanomaly.io.nifti import MGH_SUFFIXES

    neuro = neuro_kind(path) is not None  # MINC, PAR/REC, AFNI
    if itk_format(path) == "nifti" or path.suffix.lower() in (".hdr", *MGH_SUFFIXES) or neuro:  # nibabel's
        from medanomaly.io.neuro import neuro_layout
        from medanomaly.io.nifti import nifti_layout

        (x, y, z), components, itemsize, spacing = (neuro_layout if neuro else nifti_layout)(path)
        modality = "MR" if path.suffix.lower() == ".par" else "OT"  # PAR/REC: a Philips MR scanner's export
        return SeriesEntry(key=content_key(path, root, data_files), study_uid=None, kind="volume", files=[path],
                           modality=modality, rows=y,
                           columns=x, n_frames=z, bytes_per_sample=itemsize, samples=components,
                           slice_thickness=spacing[2], orientation="axial")  # fmt: skip

    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("not a readable NIfTI/NRRD/MetaImage header", path) from None
    check_volume(reader.GetSize()[3] if reader.GetDimension() > 3 else 1, None, path)  # a 4D file, as for NIfTI
    size = list(reader.GetSize()) + [1, 1]
    modality = reader.GetMetaData("modality") if reader.HasMetaDataKey("modality") else "OT"
    return SeriesEntry(
        key=content_key(path, root, data_files),
        study_uid=None,
        kind="volume",
        files=[path],
        modality=modality or "OT",
        rows=int(size[1]),
        columns=int(size[0]),
        n_frames=int(size[2]),
        bytes_per_sample=_itk_bytes(reader),
        samples=int(reader.GetNumberOfComponents()),
        slice_thickness=float(reader.GetSpacing()[2]) if reader.GetDimension() >= 3 else None,
        orientation="axial",
    )


def _itk_bytes(reader: Any) -> int:
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID()).lower()
    for token, nbytes in (("64", 8), ("double", 8), ("32", 4), ("float", 4), ("16", 2), ("8", 1)):
        if token in name:
            return nbytes
    return 4


def _add_file(path: Path, root: Path, index: ArchiveIndex, by_uid: dict[str, SeriesEntry],
              patient_secret: bytes | None) -> None:  # fmt: skip
    """Index one file: a volume series, a slice of a DICOM series, or a problem."""
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        data = _data_files(path)
        index.data_files.update(data)  # first: a header refused (a 4D pair) left its .img / .rec listed as not DICOM
        index.series.append(_volume_entry(path, root, data))
        return
    h = _dicom_header(path)
    reason = _non_image_reason(h)
    if reason is not None:
        index.problems.append(Problem(display_path(path, root), reason))
        return
    if not h.get("SeriesInstanceUID"):
        index.problems.append(Problem(display_path(path, root), "DICOM image without SeriesInstanceUID"))
        return
    uid = str(h["SeriesInstanceUID"])
    entry = by_uid.get(uid)
    if entry is None:
        entry = by_uid[uid] = _new_dicom_entry(h, patient_secret)
        index.series.append(entry)
    entry.files.append(path)
    entry.n_frames += int(h.get("NumberOfFrames") or 1)


def walk_archive(root: str | Path, patient_secret: bytes | None = None) -> ArchiveIndex:
    """Index every series under ``root`` (headers only), reporting what cannot be used.

    Args:
        root: a folder (searched recursively, links followed safely) or one file.
        patient_secret: the secret of the series' patient keys (:func:`patient_key`; default: the process's own).

    Returns:
        The :class:`ArchiveIndex`: series in the order first met, and the problems (relative
        path + reason) of unreadable files, non-image objects and unlistable folders.

    Raises:
        InputError: ``root`` does not exist.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError("no such file or folder", root)
    index = ArchiveIndex(root=root)
    by_uid: dict[str, SeriesEntry] = {}
    files = [root] if root.is_file() else iter_files(root, index.problems)
    base = root.parent if root.is_file() else root
    for path in files:
        index.n_files += 1
        try:
            _add_file(path, base, index, by_uid, patient_secret)
        except InputError as exc:
            index.problems.append(Problem(display_path(path, base), reword_frame_advice(exc.reason, FRAME_ALONE_ADVICE)))
        except OSError as exc:
            index.problems.append(Problem(display_path(path, base), f"unreadable ({exc.strerror or exc})"))
    voxels = {display_path(data, base) for data in index.data_files}
    index.problems = [p for p in index.problems if p.where not in voxels]  # an .nhdr's .raw is not "not DICOM"
    return index


def _link_name(i: int) -> str:
    """The name of the link to file ``i`` of a series in :func:`read_series`'s folder (neutral: no PHI)."""
    return f"{i:06d}.dcm"


_LINK_NAME = re.compile(r"\b(\d{6})\.dcm\b")


def named_files(entry: SeriesEntry, text: str, root: Path, shown: Callable[[str], str] = str) -> str:
    """``text`` (a reader's message about ``entry``) with the names of :func:`read_series`'s temporary links
    (``000004.dcm``) replaced by the files they stand for, relative to ``root`` and passed through ``shown`` (a
    keyed id with ``--keyed-ids``): "gap of 10 mm between 000003.dcm and 000005.dcm" named no file a user has."""
    if len(entry.files) < 2:  # a one-file series is read without links
        return text

    def place(match: re.Match[str]) -> str:
        i = int(match[1])
        return shown(display_path(entry.files[i], root)) if i < len(entry.files) else match[0]

    return _LINK_NAME.sub(place, text)


def numbered_files(entry: SeriesEntry, text: str) -> str:
    """``text`` with :func:`read_series`'s link names as ``file <n> of the series`` (a result names no file or
    folder: ``problems.csv`` does, through :func:`named_files`)."""
    if len(entry.files) < 2:
        return text
    return _LINK_NAME.sub(lambda m: f"file {int(m[1]) + 1} of the series", text)


def skipped_problems(entry: SeriesEntry, skipped: Sequence[Sequence[str]], root: Path,
                     shown: Callable[[str], str] = str) -> list[Problem]:  # fmt: skip
    """The files the reader skipped while reading ``entry`` (``(name, reason)`` as :func:`read_series`'s volume lists
    them, named by their links) as problems naming the archive's files, the files a reason names through ``shown``.
    They were logged under the links' names alone ("skipped 000004.dcm: truncated"), and ``problems.csv`` did not
    list them."""
    out = []
    for name, reason in skipped:
        link = _LINK_NAME.fullmatch(name)
        if link and len(entry.files) > 1 and int(link[1]) < len(entry.files):  # write_problems keys the place itself
            out.append(Problem(display_path(entry.files[int(link[1])], root), named_files(entry, reason, root, shown)))
    return out


class _NumberedLinks(logging.Filter):
    """Rewrites the series reader's log lines of one thread ("skipped 000004.dcm: truncated", named by a temporary link
    no user has) as "series <key>: skipped file 5 of the series: truncated (named in problems.csv)"."""

    def __init__(self, entry: SeriesEntry, tmp: str, shown_as: str) -> None:
        super().__init__()
        self.entry, self.shown_as = entry, shown_as
        self.tmp_name, self.thread = os.path.basename(tmp), threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread:
            text = numbered_files(self.entry, record.getMessage()).replace(self.tmp_name, "the series")
            record.msg, record.args = f"series {self.shown_as}: {text} (named in problems.csv)", ()
        return True


@contextmanager
def _reader_log_numbered(entry: SeriesEntry, tmp: str, shown_as: str) -> Iterator[None]:
    """While this thread reads ``entry`` through the links in ``tmp``, the reader's log names no link (see
    :class:`_NumberedLinks`); ``problems.csv`` names the files (:func:`skipped_problems`)."""
    from medanomaly.io import dicom_series

    numbered = _NumberedLinks(entry, tmp, shown_as)
    dicom_series.log.addFilter(numbered)
    try:
        yield
    finally:
        dicom_series.log.removeFilter(numbered)


def read_series(entry: SeriesEntry, max_voxel_bytes: int | None = None, shown_as: str | None = None) -> Any:
    """Read one series of the index into a :class:`~medanomaly.types.Volume`.

    A DICOM series whose files lie in several folders is read through a temporary folder of
    links to exactly its files (the reader then sees one series, wherever the files are;
    :mod:`medanomaly.deploy.series_links`). The
    reader's log lines name the series ``shown_as`` (a keyed id with ``--keyed-ids``; else its key).

    Raises:
        InputError: the series cannot be read (gaps, corrupt slices, over the voxel limit...);
            the message names the series by its key, never by a folder.
    """
    from medanomaly.deploy.series_links import series_links_folder
    from medanomaly.io import read

    where = f"series {entry.key}"
    try:
        if entry.kind == "volume" or len(entry.files) == 1:
            return read(entry.files[0], max_voxel_bytes=max_voxel_bytes)
        with series_links_folder() as tmp, _reader_log_numbered(entry, tmp, shown_as or entry.key):
            for i, path in enumerate(entry.files):
                os.symlink(os.path.abspath(path), os.path.join(tmp, _link_name(i)))
            return read(tmp, series_uid=entry.key, max_voxel_bytes=max_voxel_bytes)
    except InputError as exc:
        raise InputError(exc.reason, where) from None
    except OSError as exc:
        raise InputError(f"unreadable ({exc.strerror or exc})", where) from None
