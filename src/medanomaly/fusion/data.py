"""Paired-modality data: the manifest, its loader, and the checks fusion depends on.

The manifest is a CSV with a ``patient_id`` column, one ``<name>_path`` column per modality and a
``label`` column (0 = normal, 1 = abnormal), e.g. the cardiovascular case study's::

    patient_id,ct_path,mr_path,label
    p001,ct/p001.nii.gz,mr/p001.nii.gz,1

Relative paths are resolved against the manifest's folder. The modality names are the column
stems upper-cased (``CT``, ``MR``; ``T1``, ``PD`` for the simulated brain pair).

What is checked, and what happens:

* **a file missing for one modality of one patient**: the case is kept and flagged
  ``missing_modality:<NAME>`` (fusion models predict from the rest); a patient with no file at all
  is reported and skipped.
* **swapped modalities**: the modality stored in the image (``Volume.meta["modality"]`` or the
  DICOM ``Modality`` (0008,0060) attribute) is compared with the column's expectation (``ct`` ->
  CT, ``mr``/``t1``/``pd`` -> MR, ``pet`` -> PT); swapped or wrong columns raise
  :class:`~medanomaly.errors.InputError` naming the columns.
* **different grids**: fusion assumes co-registered inputs on one grid; mismatched shape,
  spacing, origin or direction raise InputError telling the user to run ``medanomaly register``.

In a batch (:func:`load_paired_dataset`), a bad patient is reported and skipped, the rest load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.engine.alignment import align_to_first
from medanomaly.errors import InputError
from medanomaly.io.dicom import modality_code
from medanomaly.io.tables import read_csv
from medanomaly.preprocess.intensity import WINDOWS, robust_zscore_array, window_array
from medanomaly.io.frames import read_modality
from medanomaly.types import Volume, is_cine_loop

#: Manifest column stem -> DICOM Modality code the image must carry (when it says).
EXPECTED_DICOM_MODALITY: dict[str, str] = {
    "ct": "CT",
    "mr": "MR",
    "mri": "MR",
    "t1": "MR",
    "t2": "MR",
    "pd": "MR",
    "flair": "MR",
    "pet": "PT",
    "pt": "PT",
    "us": "US",
}


@dataclass(frozen=True)
class PairedCase:
    """One manifest row.

    Attributes:
        patient_id: pseudonymous id from the manifest (never a name).
        paths: modality name (``"CT"``) -> file, or None when that file is missing.
        label: 0 normal, 1 abnormal.
        flags: ``missing_modality:<NAME>`` for each missing file.
    """

    patient_id: str
    paths: Mapping[str, Path | None]
    label: int
    flags: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the modalities whose file is missing."""
        return tuple(name for name, path in self.paths.items() if path is None)


@dataclass(frozen=True)
class PairedManifest:
    """A validated manifest: usable cases, the modalities, and the rows that were skipped."""

    path: Path
    modalities: tuple[str, ...]
    cases: tuple[PairedCase, ...]
    problems: tuple[tuple[str, str], ...] = ()  # (patient_id or row number, reason)


@dataclass(frozen=True, eq=False)
class PairedSample:
    """Loaded images of one patient: modality -> Volume (None when missing), all on one grid."""

    patient_id: str
    volumes: Mapping[str, Volume | None]
    label: int
    flags: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------- manifest
def read_manifest(path: str | Path) -> PairedManifest:
    """Read and validate a paired-modality manifest CSV.

    Raises:
        InputError: the file is missing, has no ``patient_id``/``label`` column, or fewer than
            two ``<name>_path`` columns.
    """
    path = Path(path)
    with read_csv(path, "manifest") as reader:  # a missing file: "manifest not found"
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = list(reader)
    stems = [c[: -len("_path")] for c in columns if c.endswith("_path")]
    if "patient_id" not in columns or "label" not in columns:
        raise InputError("manifest needs 'patient_id' and 'label' columns", path)
    if len(stems) < 2:
        raise InputError("manifest needs at least two '<modality>_path' columns (e.g. ct_path, mr_path)", path)
    modalities = tuple(s.upper() for s in stems)
    cases: list[PairedCase] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        pid = row.get("patient_id", "")
        where = pid or f"row {number}"
        if not pid:
            problems.append((where, "empty patient_id"))
            continue
        if pid in seen:
            problems.append((where, "duplicate patient_id (splits are per patient)"))
            continue
        try:
            label = int(row["label"])
        except ValueError:
            problems.append((where, f"label must be an integer, got {row['label']!r}"))
            continue
        paths: dict[str, Path | None] = {}
        for stem, name in zip(stems, modalities, strict=True):
            value = row.get(f"{stem}_path", "")
            file = (path.parent / value) if value and not Path(value).is_absolute() else Path(value)
            paths[name] = file if value and file.exists() else None
        flags = tuple(f"missing_modality:{name}" for name, p in paths.items() if p is None)
        if len(flags) == len(modalities):
            problems.append((where, "no file found for any modality"))
            continue
        seen.add(pid)
        cases.append(PairedCase(pid, paths, label, flags))
    return PairedManifest(path, modalities, tuple(cases), tuple(problems))


# --------------------------------------------------------------------------------------- checks
def detect_modality(path: Path, volume: Volume | None = None) -> str | None:
    """The modality an image says it is: ``Volume.meta["modality"]``, else the DICOM header.

    Returns None when neither says (NIfTI, PNG without metadata): such files are not checked.
    """
    if volume is not None and volume.meta.get("modality") not in (None, "", "OT"):
        return str(volume.meta["modality"]).upper()
    candidate = path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            return None
        candidate = files[0]
    try:
        with candidate.open("rb") as handle:
            handle.seek(128)
            is_dicom = handle.read(4) == b"DICM"
    except OSError:
        return None
    if not is_dicom and candidate.suffix.lower() != ".dcm":
        return None
    import pydicom

    try:
        header = pydicom.dcmread(candidate, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - an unreadable header just means "unknown"
        return None
    return modality_code(getattr(header, "Modality", None)) or None


def check_modalities(detected: Mapping[str, str | None], source: Path | None = None,
                     labels: Mapping[str, str] | None = None) -> None:
    """Raise InputError when images sit in the wrong manifest columns (or behind the wrong modality key).

    Args:
        detected: modality name (column stem upper-cased, ``"CT"``) -> modality the image says.
        source: manifest path, for the message.
        labels: how each modality's input is called in the message (default: its manifest column, ``ct_path``;
            a prediction from Volumes keyed by modality says ``CT``).
    """
    expected = {name: EXPECTED_DICOM_MODALITY.get(name.lower()) for name in detected}
    wrong = {n: d for n, d in detected.items() if d and expected[n] and d != expected[n]}
    if not wrong:
        return
    label = {n: (labels or {}).get(n, f"{n.lower()}_path") for n in detected}
    names = list(wrong)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if wrong[a] == expected[b] and wrong[b] == expected[a]:
                raise InputError(f"modalities swapped: {label[a]} holds {wrong[a]} and {label[b]} holds {wrong[b]}",
                                 source)  # fmt: skip
    name, found = next(iter(wrong.items()))
    raise InputError(f"{label[name]} holds a {found} image, expected {expected[name]}", source)


def model_inputs(volumes: Mapping[str, Volume | None], modalities: Sequence[str]) -> dict[str, Volume | None]:
    """The Volumes of one prediction in the model's modality order (None = missing), checked: no unknown modality
    name, at least one present, each image's own modality matching its key (``OT``, DICOM's "other", says
    nothing), all on one grid.

    Raises:
        InputError: what is wrong, naming the modalities (the caller names the files).
    """
    unknown = set(volumes) - set(modalities)
    if unknown:
        raise InputError(f"unknown modalities {sorted(unknown)}; the model expects {list(modalities)}")
    full = {name: volumes.get(name) for name in modalities}
    if all(v is None for v in full.values()):
        raise InputError("no modality present: nothing to predict from")
    check_modalities({n: (v.modality if v is not None and v.modality != "OT" else None) for n, v in full.items()},
                     labels={n: n for n in full})  # fmt: skip
    check_same_grid(full)
    return full


def describe_grid(volume: Volume) -> str:
    """One-line grid description: size (x, y, z), spacing mm, origin mm."""
    size = "x".join(str(s) for s in volume.size_xyz)
    spacing = "x".join(f"{s:g}" for s in volume.spacing)
    origin = ",".join(f"{o:g}" for o in volume.origin)
    return f"{size} vox, {spacing} mm, origin ({origin})"


def check_same_grid(volumes: Mapping[str, Volume | None], source: Path | None = None, tol: float = 1e-3) -> None:
    """Refuse modalities on different grids (fusion assumes co-registered images).

    Raises:
        InputError: naming the two modalities and their grids, and how to fix it.
    """
    present = [(n, v) for n, v in volumes.items() if v is not None]
    if not present:
        return
    ref_name, ref = present[0]
    for name, vol in present[1:]:
        if not ref.same_grid(vol, tol=tol):
            raise InputError(
                f"grids differ: {ref_name} {describe_grid(ref)} vs {name} {describe_grid(vol)}; "
                f"co-register first (medanomaly register {ref_name}_IMAGE {name}_IMAGE --out OUT)",
                source,
            )


# --------------------------------------------------------------------------------------- loading
def load_case(
    case: PairedCase, reader: Callable[[Path], Volume] | None = None, source: Path | None = None,
    volumes: Mapping[str, int] | None = None, alignment: str = "none",
) -> PairedSample:  # fmt: skip
    """Read every present modality of one case (``volumes``: a modality's volume of a 4D file,
    :func:`medanomaly.io.frames.read_modality`), run the modality checks, bring the others onto the first's grid as
    ``alignment`` says (:func:`medanomaly.engine.alignment.align_to_first`; ``none``: nothing moved, and two recorded
    DICOM frames of reference refused as prediction refuses them) and check the grid.

    Raises:
        InputError: unreadable file, swapped or wrong modality, different grids, two frames of reference unaligned, a
            registration that fails.
    """
    volumes_read: dict[str, Volume | None] = {}
    detected: dict[str, str | None] = {}
    for name, path in case.paths.items():
        if path is None:
            volumes_read[name] = None
            continue
        volume = reader(path) if reader is not None else read_modality(path, name, volumes)
        detected[name] = detect_modality(path, volume)
        volumes_read[name] = volume.with_meta(modality=detected[name] or EXPECTED_DICOM_MODALITY.get(name.lower(), "OT"))
    check_modalities(detected, source)
    volumes_read = align_to_first(volumes_read, alignment, remedy="data.alignment: register")
    check_same_grid(volumes_read, source)
    return PairedSample(case.patient_id, volumes_read, case.label, case.flags)


def load_paired_dataset(
    manifest: str | Path | PairedManifest, reader: Callable[[Path], Volume] | None = None,
    convert: Callable[[PairedSample], Any] | None = None, volumes: Mapping[str, int] | None = None,
    alignment: str = "none",
) -> tuple[list[Any], list[tuple[str, str]]]:  # fmt: skip
    """Load every case of a manifest; a bad case is reported in ``problems`` and skipped.

    ``convert`` (e.g. to a network input) is applied to each case as soon as it is loaded and only its result is
    kept, so the images of every case are never held at their native size together; an InputError it raises
    skips the case like a loading error.

    Returns:
        (samples, problems): the samples (or what ``convert`` made of them); problems are (patient_id, one-line
        reason), never image content.
    """
    if not isinstance(manifest, PairedManifest):
        manifest = read_manifest(manifest)
    samples: list[Any] = []
    problems = list(manifest.problems)
    for case in manifest.cases:
        try:
            sample = load_case(case, reader, volumes=volumes, alignment=alignment)
            samples.append(convert(sample) if convert is not None else sample)
        except InputError as exc:
            problems.append((case.patient_id, exc.reason))
    return samples, problems


# --------------------------------------------------------------------------------------- tensors
def normalise(volume: Volume, window: tuple[float, float] | None = None) -> np.ndarray:
    """Voxels scaled for a network, float32 (colour components averaged to one first).

    CT (or any ``window`` given, HU): clipped to the window and mapped to [0, 1]
    (default the ``cardiac`` window, -200..600 HU: soft tissue and contrast-enhanced blood pool).
    Other modalities (MR has no absolute unit): robust z-score from the 1st-99th percentile
    range. Both are the :mod:`medanomaly.preprocess.intensity` functions.
    """
    array = volume.array.astype(np.float32)
    if array.ndim == 4:
        array = array.mean(axis=3)
    if window is None and volume.modality == "CT":
        window = WINDOWS["cardiac"]
    if window is not None:
        return window_array(array, *window)
    return robust_zscore_array(array)


def sample_to_array(
    sample: PairedSample,
    modalities: Sequence[str],
    size: Sequence[int],
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack a sample's modalities into a network input.

    Args:
        sample: a loaded :class:`PairedSample` (modalities on one grid).
        modalities: order of the channels, e.g. ``("CT", "MR")``.
        size: output spatial size, (y, x) for 2D (a 3D image gives its middle slice) or
            (z, y, x) for 3D; the stacked modalities are resized together
            (:func:`medanomaly.preprocess.resize.resize_array`, the classifiers' resize).
        windows: per-modality HU windows (see :func:`normalise`).

    Returns:
        (array, present): array (M, *size) float32 with zeros for missing modalities, and the
        boolean presence vector (M,).
    """
    from medanomaly.preprocess.checks import require_finite
    from medanomaly.preprocess.resize import resize_array

    windows = dict(windows or {})
    arrays: dict[str, np.ndarray] = {}
    for name in modalities:
        vol = sample.volumes.get(name)
        if vol is not None:
            require_finite(vol, name)  # NaN or values float32 cannot hold gave NaN probabilities, blamed on weights
            if is_cine_loop(vol):  # a 2D network took its middle frame
                raise InputError(f"{name}: a cine loop of {vol.shape[0]} frames in time, where fusion takes "
                                 "co-registered images in space: save one frame as its own image")  # fmt: skip
            array = normalise(vol, windows.get(name))
            arrays[name] = array[array.shape[0] // 2] if len(size) == 2 else array  # 2D model: middle slice
    present = np.asarray([name in arrays for name in modalities], dtype=bool)
    if not arrays:
        return np.zeros((len(modalities), *size), np.float32), present
    shape = next(iter(arrays.values())).shape
    stacked = np.stack([arrays.get(name, np.zeros(shape, np.float32)) for name in modalities])
    return resize_array(stacked, size), present
