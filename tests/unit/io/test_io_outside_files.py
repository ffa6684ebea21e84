"""Every outside file we can find in the installed packages, read by ``medanomaly.io.read``.

Sources (files nobody on the project wrote): pydicom's own test files and pydicom-data
(``pydicom.data.get_testdata_files()``, plus its character-set files), deid-data, nibabel's
test data, the ITK examples (Debian ``insighttoolkit5-examples``), the mricron templates and
nilearn's templates. For every file and every folder among them:

* **no crash**: either a Volume, or one :class:`InputError` whose message is one line starting
  with the path (unsupported types, non-images and damaged files included);
* **no silently blank image**: a Volume whose voxels are all equal while the file's own pixel
  data (pydicom / nibabel / SimpleITK reading the same file) are not, is a failure;
* **NIfTI geometry equals nibabel's affine** (RAS -> LPS) for every NIfTI, MGH, MINC, PAR/REC and AFNI read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.types import Volume

_SITE = Path(np.__file__).parents[1]
ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
MRICRON = Path("/usr/share/mricron/templates")


def _tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _pydicom_files() -> list[Path]:
    from pydicom.data import get_charset_files, get_testdata_files

    return sorted({Path(p) for p in get_testdata_files()} | {Path(p) for p in get_charset_files()})


#: source -> (how to list its paths, the least number of paths it must have)
SOURCES: dict[str, tuple[Callable[[], list[Path]], int]] = {
    "pydicom": (_pydicom_files, 250),  # files and the folders get_testdata_files lists
    "deid-data": (lambda: _tree(_SITE / "deid_data" / "data"), 15),
    "nibabel": (lambda: _tree(_SITE / "nibabel" / "tests" / "data"), 80),
    "itk-examples": (lambda: _tree(ITK_DATA), 120),
    "mricron": (lambda: _tree(MRICRON), 20),
    "nilearn": (lambda: sorted((_SITE / "nilearn" / "datasets" / "data").glob("*.nii*")), 4),
}


def _is_constant(array: np.ndarray) -> bool:
    values = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    return values.size == 0 or bool(values.min() == values.max())


def _dicom_pixels_vary(path: Path, series_uid: str | None) -> bool:
    """Whether pydicom decodes varying pixels in ``path`` (a file, or the files of the series
    ``series_uid`` under a folder / next to a DICOMDIR)."""
    import pydicom

    files = [path] if path.is_file() and path.name.upper() != "DICOMDIR" else None
    if files is None:
        root = path if path.is_dir() else path.parent
        files = [p for p in root.rglob("*") if p.is_file()]
    for file in files:
        try:
            ds = pydicom.dcmread(file, force=True)
            if series_uid is not None and str(ds.get("SeriesInstanceUID", "")) != series_uid:
                continue
            if not _is_constant(ds.pixel_array):
                return True
        except Exception:  # noqa: BLE001 - not an image / not decodable by pydicom alone
            continue
    return False


def _file_pixels_vary(path: Path, vol: Volume) -> bool:
    """Whether the file's own pixel data, read by an independent reader, vary."""
    fmt = vol.meta.get("source_format")
    if fmt == "dicom":
        return _dicom_pixels_vary(path, vol.meta.get("series_uid"))
    if fmt == "nifti":
        return not _is_constant(np.asarray(nib.load(str(path)).dataobj.get_unscaled()))
    if fmt in ("minc", "parrec", "afni"):
        return not _is_constant(np.asarray(_nibabel_image(path).dataobj))
    import SimpleITK as sitk

    return not _is_constant(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def _nibabel_image(path: Path):
    """nibabel's image of ``path`` (a PAR/REC pair's from its .PAR, an AFNI dataset's from its .HEAD, as nibabel
    opens them)."""
    if path.name.lower().endswith((".brik", ".brik.gz")):
        return nib.load(str(path.parent / (path.name[: path.name.lower().rindex(".brik")] + ".HEAD")))
    return nib.load(str(path.with_suffix(".PAR") if path.suffix.lower() == ".rec" else path))


def _check(path: Path) -> str | None:
    """None when ``path`` is read right or refused in one line; else what went wrong."""
    try:
        vol = read(path)
    except InputError as exc:
        text = str(exc)
        if "\n" in text or not text.startswith(str(path)) or text.count(str(path)) != 1:
            return f"error not one line naming the file once: {text!r}"
        return None
    except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
        return f"crash {type(exc).__name__}: {exc}"
    if _is_constant(vol.array) and _file_pixels_vary(path, vol):
        return f"silently blank: all voxels {vol.array.ravel()[0]!r}, the file's pixels vary"
    if vol.meta.get("source_format") in ("nifti", "mgh", "minc", "parrec", "afni"):  # nibabel's affine for all
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ _nibabel_image(path).affine
        if not np.allclose(vol.affine_lps, lps, atol=1e-4):
            return f"NIfTI geometry differs from nibabel's affine by {np.abs(vol.affine_lps - lps).max():.3g} mm"
    return None


@pytest.mark.parametrize(
    "source", [pytest.param(s, marks=pytest.mark.slow) if s == "pydicom" else s for s in sorted(SOURCES)]
)  # pydicom's ~280 files and folders take ~20 s on the shared machine: slow
def test_io_outside_files_read_right(source):
    """0 crashes, 0 silently blank images, NIfTI geometry equal to nibabel's, for a whole source."""
    lister, least = SOURCES[source]
    paths = lister()
    assert len(paths) >= least, f"{source}: only {len(paths)} files found (run `make setup`)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom/nibabel warnings about odd-but-readable headers
        problems = {str(p): why for p in paths if (why := _check(p)) is not None}
    assert not problems, f"{len(problems)} of {len(paths)} {source} files: {problems}"


def test_io_outside_files_checker_catches_what_it_should(monkeypatch):
    """The checks above can fail: undo the big-endian palette fix and the NIfTI RAS->LPS
    conversion, and the checker reports a blank image and a geometry error."""
    from pydicom.data import get_testdata_file

    import medanomaly.io.dicom_pixels as dicom_pixels
    import medanomaly.io.nifti as nifti

    expb = Path(get_testdata_file("OBXXXX1A_expb.dcm"))
    assert _check(expb) is None
    monkeypatch.setattr(dicom_pixels, "_palette_in_native_order", lambda ds: ds)
    assert "silently blank" in (_check(expb) or "")
    template = MRICRON / "ch2.nii.gz"
    assert _check(template) is None
    monkeypatch.setattr(nifti, "_RAS_TO_LPS", np.eye(4))
    assert "NIfTI geometry differs" in (_check(template) or "")
    assert _check(ITK_DATA / "BrainT1Slice.png") is None and _check(MRICRON / "aal.nii.lut") is None
