"""A folder of DICOM files to one :class:`~medanomaly.types.Volume`: group, sort, check, stack.

What it does, in order:

1. parse every file under the folder with pydicom (unreadable files are skipped, logged with
   their reason and listed in ``Volume.meta["skipped_files"]``, the reasons in ``["skipped_reasons"]``;
   non-image objects such as a DICOMDIR, SR or presentation state are ignored);
2. group the images by ``SeriesInstanceUID``; with several series and no ``series_uid`` chosen,
   fail with the list of series by UID (modality, file count; never the series description,
   which is free text and can hold a name);
3. sort the slices by ``ImagePositionPatient`` projected on the slice normal (never by file
   name or instance number, which are often wrong), and check that the gaps are equal: a
   missing slice, a duplicate position or a tilted stack is an :class:`InputError` naming the
   folder and the gap, not a silently wrong volume;
4. decode the pixels (compressed syntaxes in a thread pool) and apply the modality LUT per
   slice (CT in HU), writing straight into one preallocated array.

The voxel limit of :mod:`medanomaly.io.limits` is checked per file (size, deflate), while the
wanted series' pixels are gathered, and for the whole series before decoding.

Why our own and not ``SimpleITK.ImageSeriesReader``: it sorts and stacks too, but skips
neither corrupt files nor reports them, silently accepts gaps, and reads no metadata we need;
pydicom parsing plus one preallocated array is also at least as fast (``bench/bench_dicom_read.py``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.dicom import modality_code, read_dataset, safe_meta, volume_from_dataset
from medanomaly.io.dicom_geometry import (
    OffStack,
    direction_from_iop,
    in_plane_spacing,
    mark_unstated_spacing,
    orientation_unusable,
    slice_thickness,
    stack_direction,
    stated_slice_thickness,
)
from medanomaly.io.dicom_pixels import (
    _native_pixels,
    apply_rescale,
    decode_pixels,
    declared_pixels,
    is_truncated_image,
    missing_pixels_reason,
    number_of_frames,
    rescale_of,
    rescaled_dtype,
    stored_range,
)
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.limits import max_voxel_bytes as max_voxel_limit
from medanomaly.processes import usable_cpus
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Skipped files logged one line each per folder scan; the rest are counted (``meta['skipped_files']``).
SKIP_LOG_LIMIT = 10

#: Relative tolerance on slice gaps (1 %, at least 0.01 mm): scanners write rounded positions.
GAP_RTOL = 0.01
GAP_ATOL_MM = 0.01


@dataclass(frozen=True)
class SeriesSummary:
    """One series found in a folder: its UID, modality and file count.

    No free text: the series description can hold a patient's name, so series are named by UID.
    """

    series_uid: str
    modality: str
    n_files: int

    def __str__(self) -> str:
        return f"{self.series_uid} ({self.modality or '?'}, {self.n_files} files)"


@dataclass
class _Slice:
    path: Path
    ds: Dataset
    slot: int | None = None  # row of _PixelSink.buffer holding this slice's stored pixels


class _PixelSink:
    """Stored pixels of native greyscale slices, copied into one buffer while parsing.

    Each file's PixelData bytes are dropped right after the copy, so their memory is reused
    by the next file: reading a series touches one volume's worth of fresh memory instead of
    two (page faults, not parsing, dominate on a busy machine). The buffer becomes the output
    volume (permuted into slice order and rescaled in place).
    """

    def __init__(self, capacity: int, folder: Path, max_voxel_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.folder = folder
        self.limit = max_voxel_bytes
        self.buffer: np.ndarray | None = None
        self.count = 0

    def take(self, item: _Slice) -> None:
        ds = item.ds
        if not _is_simple(ds):
            return
        if self.buffer is None:
            first = _native_pixels(ds)
            if first is None:
                return
            # never more slots than the voxel limit allows (take() refuses the slice past it)
            slots = max_voxel_limit(self.limit) // max(1, first.nbytes) + 1
            self.buffer = np.empty((min(self.capacity, slots), *first.shape), first.dtype)
        # the series so far must fit the voxel limit (checked before each copy)
        check_voxel_bytes((self.count + 1, *self.buffer.shape[1:]), self.buffer.itemsize, self.folder,
                          limit=self.limit, what="series (so far)")
        if _native_pixels(ds, out=self.buffer[self.count]) is None:
            return
        item.slot = self.count
        self.count += 1
        del ds.PixelData


#: Most files a folder read looks at: a CT or MR study holds a few thousand; a folder with more is not one series
#: (``--mask /`` walked the whole file system, reading every file's header). Archives go through ``predict ARCHIVE``.
MAX_FOLDER_FILES = 100_000


def list_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, in sorted walk order (the files a folder read looks at).

    Raises:
        InputError: more than :data:`MAX_FOLDER_FILES` files, found while walking (the walk stops there).
    """
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
        if len(files) > MAX_FOLDER_FILES:
            raise InputError(f"folder holds more than {MAX_FOLDER_FILES:,} files: not one DICOM study (name the "
                             "series' folder; `medanomaly predict RUN ARCHIVE/` takes a whole archive)", folder)
    return files


def _rel(path: Path, folder: Path) -> str:
    """``path`` relative to the folder (or to a DICOMDIR's folder) named in messages."""
    try:
        return str(path.relative_to(folder if folder.is_dir() else folder.parent))
    except ValueError:  # pragma: no cover
        return path.name


def _parse_all(
    files: Sequence[Path],
    folder: Path,
    sink: _PixelSink | None = None,
    series_uid: str | None = None,
    max_voxel_bytes: int | None = None,
) -> tuple[list[_Slice], list[tuple[str, str]]]:
    """Parse every file; returns the image slices and the skipped (corrupt) files as (name, reason), not
    yet logged: when no file holds an image the caller says so in one line instead.

    Only pixels of the wanted series (``series_uid``, else the first series met) are kept:
    other series keep their headers (to list them) but drop their pixel data at once, so a
    whole-study folder never sits in memory.
    """
    slices: list[_Slice] = []
    skipped: list[tuple[str, str]] = []
    wanted = series_uid
    for path in files:
        try:
            ds = read_dataset(path, max_voxel_bytes=max_voxel_bytes)
        except InputError as exc:
            skipped.append((_rel(path, folder), exc.reason))
            continue
        has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        if not has_pixels:
            if is_truncated_image(ds):  # an image whose pixel data was cut off
                skipped.append((_rel(path, folder), missing_pixels_reason(ds)))
            else:
                log.debug("ignored %s: DICOM without pixel data", _rel(path, folder))
            continue
        item = _Slice(path, ds)
        uid = _series_key(ds)
        wanted = wanted if wanted is not None else uid
        if uid != wanted:
            for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if kw in ds:
                    delattr(ds, kw)
        elif sink is not None:
            sink.take(item)
        slices.append(item)
    return slices, skipped


def _without_copies(slices: list[_Slice], arrays: list[np.ndarray], folder: Path,
                    skipped: _Skipped) -> tuple[list[_Slice], list[np.ndarray]]:  # fmt: skip
    """The decoded slices less copies of one instance (the same SOPInstanceUID at the same position: a study exported
    twice into one folder or archive), the first decoded kept (so a truncated copy never wins), each copy skipped
    naming the one kept; they had made the series "two slices at the same position", read not at all. Slices that
    share a SOPInstanceUID at different positions (an anonymiser that blanked the UIDs) are all kept."""
    first: dict[tuple[str, tuple[float, ...] | None], _Slice] = {}
    kept: list[tuple[_Slice, np.ndarray]] = []
    for s, a in zip(slices, arrays, strict=True):
        position = _position(s.ds)
        key = (str(s.ds.get("SOPInstanceUID") or ""), None if position is None else tuple(np.round(position, 3)))
        if key[0] and key in first:
            _skip(skipped, s.path, folder, f"a copy of {_rel(first[key].path, folder)} (same SOP Instance UID)")
            continue
        first.setdefault(key, s)
        kept.append((s, a))
    return [s for s, _ in kept], [a for _, a in kept]


def _series_key(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID") or "unknown")


class _Skipped(list):
    """The names of the skipped files in order, and ``reasons``: name -> why (``meta["skipped_reasons"]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[str, str] = {}

    def meta(self) -> dict[str, list[str]]:
        return {"skipped_files": list(self), "skipped_reasons": [self.reasons[n] for n in self]}


def _skip(skipped: _Skipped, path: Path, folder: Path, reason: str) -> None:
    """Record a skipped file; the first :data:`SKIP_LOG_LIMIT` are logged one line each, then one
    line says the rest are only counted (a folder of 10,000 foreign files must not print 10,000 lines)."""
    _skip_name(skipped, _rel(path, folder), folder, reason)


def _skip_name(skipped: _Skipped, name: str, folder: Path, reason: str) -> None:
    """:func:`_skip` for a name already relative to ``folder``."""
    skipped.append(name)
    skipped.reasons[name] = reason
    if len(skipped) <= SKIP_LOG_LIMIT:
        log.warning("skipped %s: %s", name, reason)
    elif len(skipped) == SKIP_LOG_LIMIT + 1:
        log.warning("skipped more files in %s: counted, not listed one by one", folder.name)


def list_series(folder: str | Path) -> list[SeriesSummary]:
    """The image series in a folder, largest first (headers only, no pixel decoding)."""
    folder = Path(folder)
    groups: dict[str, list[Any]] = {}
    for path in list_files(folder):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except InputError:
            continue
        if "Rows" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID") or "unknown"), []).append(ds)
    return _summaries(groups)


def _summaries(groups: dict[str, list[Any]]) -> list[SeriesSummary]:
    out = []
    for uid, items in groups.items():
        ds = items[0].ds if isinstance(items[0], _Slice) else items[0]
        out.append(SeriesSummary(series_uid=uid, modality=modality_code(ds.get("Modality")), n_files=len(items)))
    return sorted(out, key=lambda s: (-s.n_files, s.series_uid))


def _choose_series(groups: dict[str, list[_Slice]], series_uid: str | None, folder: Path) -> list[_Slice]:
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(str(s) for s in _summaries(groups))
            raise InputError(f"series {series_uid} not in folder; found: {listing}", folder)
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(str(s) for s in _summaries(groups))
        raise InputError(f"folder holds {len(groups)} series, choose one (--series UID): {listing}", folder)
    return next(iter(groups.values()))


def _position(ds: Dataset) -> np.ndarray | None:
    value = ds.get("ImagePositionPatient")
    try:
        pos = np.array([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return pos if pos is not None and pos.shape == (3,) and np.all(np.isfinite(pos)) else None


def _sort_and_check(slices: list[_Slice], folder: Path) -> tuple[list[_Slice], np.ndarray, float, np.ndarray]:
    """Sort slices along the normal; returns (slices, direction, z spacing, origin)."""
    first = slices[0].ds
    direction = direction_from_iop(first.get("ImageOrientationPatient"))
    spacing = np.asarray(in_plane_spacing(first))
    for s in slices[1:]:
        other = direction_from_iop(s.ds.get("ImageOrientationPatient"))
        if not np.allclose(other, direction, atol=1e-3):
            raise InputError(
                f"slices have different orientations ({_rel(slices[0].path, folder)} vs {_rel(s.path, folder)})", folder
            )
        other_spacing = np.asarray(in_plane_spacing(s.ds))
        if not np.allclose(other_spacing, spacing, rtol=1e-3, atol=1e-4):  # one grid per volume: refuse, never stretch
            raise InputError(
                f"slices have different pixel spacings ({_rel(slices[0].path, folder)} {spacing[0]:.4g} x {spacing[1]:.4g}"
                f" mm vs {_rel(s.path, folder)} {other_spacing[0]:.4g} x {other_spacing[1]:.4g} mm)", folder
            )
    positions = [_position(s.ds) for s in slices]
    if any(p is None for p in positions):
        # No patient geometry (e.g. secondary capture stacks): instance order, nominal spacing.
        order = sorted(range(len(slices)), key=lambda i: int(slices[i].ds.get("InstanceNumber") or 0))
        ordered = [slices[i] for i in order]
        return ordered, direction, slice_thickness(first), np.asarray(positions[order[0]] or np.zeros(3))
    pos = np.asarray(positions)
    normal = direction[:, 2]
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    slices = [slices[i] for i in order]
    pos, proj = pos[order], proj[order]
    if len(slices) == 1:
        return slices, direction, slice_thickness(first), pos[0]
    gaps = np.diff(proj)
    i_min = int(np.argmin(gaps))
    if gaps[i_min] <= GAP_ATOL_MM:
        raise InputError(
            f"two slices at the same position ({_rel(slices[i_min].path, folder)}, {_rel(slices[i_min + 1].path, folder)}, "
            f"{proj[i_min]:.2f} mm along the normal): duplicate or mixed acquisitions",
            folder,
        )
    expected = float(np.median(gaps))
    bad = np.abs(gaps - expected) > max(GAP_ATOL_MM, GAP_RTOL * expected)
    if np.any(bad):
        k = int(np.argmax(np.abs(gaps - expected)))
        raise InputError(
            f"inconsistent slice spacing: gap of {gaps[k]:.3g} mm between {_rel(slices[k].path, folder)} and "
            f"{_rel(slices[k + 1].path, folder)}, expected {expected:.3g} mm (missing or extra slice?)",
            folder,
        )
    try:  # a gantry-tilted stack (slices stepping sideways) is a sheared grid
        direction, spacing_z = stack_direction(direction, pos, max(GAP_ATOL_MM, GAP_RTOL * expected))
    except OffStack as exc:
        where = "" if exc.index is None else f"{_rel(slices[exc.index].path, folder)} "
        raise InputError(f"{where}{exc.reason}", folder) from None
    return slices, direction, spacing_z, pos[0]


def _is_simple(ds: Dataset) -> bool:
    """Greyscale, single frame: the fast path (decode + rescale into the output array)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    return (
        photometric == "MONOCHROME2"
        and int(ds.get("SamplesPerPixel") or 1) == 1
        and number_of_frames(ds) == 1
        and "ModalityLUTSequence" not in ds
    )


def _decode_all(
    slices: list[_Slice], folder: Path, skipped: _Skipped, sink: _PixelSink
) -> tuple[list[_Slice], list[np.ndarray]]:
    """Decode pixels of every slice; compressed syntaxes in a thread pool. Failures are skipped."""

    def decode(s: _Slice) -> np.ndarray | InputError:
        if s.slot is not None:
            return sink.buffer[s.slot]  # type: ignore[index]
        try:
            return decode_pixels(s.ds, s.path, sink.limit)[0][0]
        except InputError as exc:
            return exc

    tsyntax = getattr(getattr(slices[0].ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(tsyntax is not None and tsyntax.is_compressed) and slices[0].slot is None
    if compressed and len(slices) > 4:
        with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
            results = list(pool.map(decode, slices))
    else:
        results = [decode(s) for s in slices]
    kept, arrays = [], []
    for s, r in zip(slices, results, strict=True):
        if isinstance(r, InputError):
            _skip(skipped, s.path, folder, r.reason)
        else:
            kept.append(s)
            arrays.append(r)
    return kept, arrays


def _permute_in_place(array: np.ndarray, order: Sequence[int]) -> None:
    """``array[k] = old_array[order[k]]`` for a permutation, one slice of scratch memory."""
    done = np.zeros(len(order), dtype=bool)
    scratch = np.empty_like(array[0])
    for start in range(len(order)):
        if done[start]:
            continue
        done[start] = True
        if order[start] == start:
            continue
        scratch[...] = array[start]
        k = start
        while True:
            src = order[k]
            done[k] = True
            if src == start:
                array[k] = scratch
                break
            array[k] = array[src]
            k = src


def _stored_in_order(ordered: list[_Slice], sink: _PixelSink) -> np.ndarray | None:
    """The sink's stored pixels as (n, rows, cols) in slice order, or None if a slice is elsewhere.

    When the series is everything the sink holds (the usual case) the buffer is permuted in
    place and returned as a view: no second volume-sized allocation.
    """
    if sink.buffer is None or any(s.slot is None for s in ordered):
        return None
    slots = [int(s.slot) for s in ordered]  # type: ignore[arg-type]
    n = len(slots)
    if sink.count == n and sorted(slots) == list(range(n)):
        stored = sink.buffer[:n]
        _permute_in_place(stored, slots)
        return stored
    return sink.buffer[slots]


def _rescale_in_place(stored: np.ndarray, pairs: Sequence[tuple[float, float]], dtype: np.dtype) -> bool:
    """Apply integer rescales in place when the target integer type has the stored item size.

    Stored values are reinterpreted in the target type; integer arithmetic wraps modulo 2**bits,
    so the result is exact whenever it fits the target type, which :func:`rescaled_dtype`
    guarantees. Returns False (nothing done) when the target needs another size or floats.
    """
    if dtype.kind != "i" or stored.dtype.kind not in "iu" or stored.dtype.itemsize != dtype.itemsize:
        return False
    if any(not float(a).is_integer() or not float(b).is_integer() for a, b in pairs):
        return False
    view = stored.view(dtype)
    if len(set(pairs)) == 1:
        slope, intercept = pairs[0]
        if slope != 1.0:
            view *= dtype.type(int(slope))
        if intercept != 0.0:
            view += dtype.type(int(intercept))
        return True
    for k, (slope, intercept) in enumerate(pairs):
        if slope != 1.0:
            view[k] *= dtype.type(int(slope))
        if intercept != 0.0:
            view[k] += dtype.type(int(intercept))
    return True


def read_dicom_folder(folder: str | Path, series_uid: str | None = None, max_voxel_bytes: int | None = None) -> Volume:
    """Read the DICOM series in a folder (searched recursively) into one Volume.

    Args:
        folder: a folder of DICOM files (names and order do not matter).
        series_uid: which series to read when the folder holds several.
        max_voxel_bytes: limit on the series' voxel data (see :mod:`medanomaly.io.limits`).

    Returns:
        Volume (z, y, x) sorted along the slice normal; CT in HU; ``meta["skipped_files"]`` lists
        files that could not be read, ``meta["n_series"]`` how many series the folder holds.

    Raises:
        InputError: empty folder, no DICOM images, several series and none chosen, unequal
            slice gaps, duplicate positions, different slice sizes or orientations, or a series
            over the voxel limit.
    """
    folder = Path(folder)
    files = list_files(folder)
    if not files:
        raise InputError("empty folder (no files)", folder)
    return read_dicom_files(files, folder, series_uid=series_uid, max_voxel_bytes=max_voxel_bytes)


def read_dicom_files(
    files: Sequence[Path], source: Path, *, series_uid: str | None = None, max_voxel_bytes: int | None = None
) -> Volume:
    """Read one series from an explicit list of files (a folder's, or those a DICOMDIR references).

    Args:
        files: candidate DICOM files; unreadable ones are skipped and listed.
        source: the folder (or DICOMDIR file) named in errors; file names are given relative to it.
        series_uid: which series to read when the files hold several.
        max_voxel_bytes: limit on the series' voxel data.
    """
    sink = _PixelSink(len(files), source, max_voxel_bytes)
    slices, unreadable = _parse_all(files, source, sink, series_uid, max_voxel_bytes)
    if not slices:  # one line, with the commonest reason: not one "skipped" line per file before it
        detail = ""
        if unreadable:
            reason, count = Counter(r for _, r in unreadable).most_common(1)[0]
            share = "" if count == len(unreadable) else f", {count} of them"
            detail = f", {len(unreadable)} unreadable{share}: {reason}"
        raise InputError(f"no DICOM images in {_kind(source)} ({len(files)} file(s){detail})", source)
    skipped = _Skipped()
    for name, reason in unreadable:  # logged now that the read goes on
        _skip_name(skipped, name, source, reason)
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(_series_key(s.ds), []).append(s)
    chosen = _choose_series(groups, series_uid, source)
    if len(chosen) == 1 and chosen[0].slot is None:  # one (possibly multi-frame) file
        vol = volume_from_dataset(chosen[0].ds, chosen[0].path, max_voxel_bytes)
        return vol.with_meta(n_series=len(groups), **skipped.meta())
    if any(number_of_frames(s.ds) > 1 for s in chosen):
        raise InputError("series of several multi-frame files: read one file at a time", source)
    sizes = {(int(s.ds.get("Rows") or 0), int(s.ds.get("Columns") or 0)) for s in chosen}
    if len(sizes) > 1:
        raise InputError(f"slices of different sizes in one series: {sorted(sizes)}", source)
    slice_shape, itemsize = declared_pixels(chosen[0].ds)
    check_voxel_bytes((len(chosen), *slice_shape[1:]), itemsize, source, limit=max_voxel_bytes, what="series")

    chosen, arrays = _decode_all(chosen, source, skipped, sink)
    if not chosen:
        raise InputError("no slice of the series could be decoded", source)
    chosen, arrays = _without_copies(chosen, arrays, source, skipped)
    try:
        ordered, direction, spacing_z, origin = _sort_and_check(chosen, source)
    except InputError as exc:
        if skipped and "gap of" in exc.reason:  # the missing slice may be one we could not read
            names = ", ".join(sorted(skipped)[:3]) + (", ..." if len(skipped) > 3 else "")
            raise InputError(f"{exc.reason}; {len(skipped)} unreadable file(s) skipped: {names}", source) from None
        raise
    by_path = {s.path: a for s, a in zip(chosen, arrays, strict=True)}
    arrays = [by_path[s.path] for s in ordered]
    first = ordered[0].ds
    sx, sy = in_plane_spacing(first)
    meta = {**safe_meta(first), "n_series": len(groups), **skipped.meta(), "n_frames": len(ordered)}
    if orientation_unusable(first.get("ImageOrientationPatient")):
        meta["orientation_assumed"] = True  # read as axial: the slice checks above held along z
    z_stated = len(ordered) == 1 or stated_slice_thickness(first) is not None or all(
        _position(s.ds) is not None for s in ordered)  # fmt: skip
    mark_unstated_spacing(meta, direction, z_stated)
    out = _stack(ordered, arrays, sink, source, meta)
    return Volume(out, spacing=(sx, sy, spacing_z), origin=origin, direction=direction, meta=meta)


def _kind(source: Path) -> str:
    return "folder" if source.is_dir() else "the files it references"


def _stack(
    ordered: list[_Slice], arrays: list[np.ndarray], sink: _PixelSink, source: Path, meta: dict[str, Any]
) -> np.ndarray:
    """The ordered slices as one (z, y, x) array in voxel units (HU for CT); updates ``meta``."""
    first = ordered[0].ds
    if not all(_is_simple(s.ds) for s in ordered):  # colour, MONOCHROME1 or LUT: slice by slice
        if any(s.slot is not None for s in ordered):
            raise InputError("slices of one series mix greyscale and colour/MONOCHROME1 pixels", source)
        vols = [volume_from_dataset(s.ds, s.path, sink.limit) for s in ordered]
        meta.update({k: v for k, v in vols[0].meta.items() if k not in meta or k == "photometric"})
        return np.concatenate([v.array for v in vols])
    rescales = [rescale_of(s.ds) for s in ordered]
    stored = _stored_in_order(ordered, sink)
    meta.update(photometric="MONOCHROME2", rescale_applied=any(r is not None for r in rescales))
    if not meta["rescale_applied"]:
        out = stored if stored is not None else np.stack(arrays)
        return out.astype(np.dtype(out.dtype).newbyteorder("="), copy=False)
    pairs = [r or (1.0, 0.0) for r in rescales]
    dtype = np.result_type(*{rescaled_dtype(stored_range(first), a, b) for a, b in pairs})
    if stored is not None and _rescale_in_place(stored, pairs, dtype):
        out = stored.view(dtype)
    else:
        # ``arrays`` may view the sink buffer, which _stored_in_order has permuted: use ``stored``
        sources = list(stored) if stored is not None else arrays
        out = np.empty((len(ordered), *sources[0].shape), dtype)
        for k, (array, (slope, intercept)) in enumerate(zip(sources, pairs, strict=True)):
            apply_rescale(array, slope, intercept, dtype, out=out[k])
    if len(set(pairs)) == 1:
        meta.update(rescale_slope=pairs[0][0], rescale_intercept=pairs[0][1])
    if meta.get("modality") == "CT":
        meta["units"] = "HU"
    return out


__all__ = ["SeriesSummary", "list_series", "read_dicom_files", "read_dicom_folder"]
