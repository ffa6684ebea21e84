"""MINC, Philips PAR/REC and AFNI read as nibabel reads them (they were "unsupported file type"), on nibabel's own test
files (written by MINC tools, a Philips scanner and AFNI, not by us); half pairs, truncated voxels, 4D files, an
oversized text header and the voxel limit are one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import count_volumes, detect_format, read

DATA = Path(nib.__file__).parent / "tests" / "data"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["tiny.mnc", "minc1_1_scale.mnc", "small.mnc", "minc2_1_scale.mnc"])
def test_minc_1_and_2_read_with_nibabel_s_world_and_scaled_values(name: str) -> None:
    """MINC's world is RAS (as nibabel, mnc2nii and the MNI tools take it); SimpleITK's reader took it as LPS (x and y
    of the other sign: ITK pull request 4864) and could not open the MINC-1 files at all."""
    image = nib.load(str(DATA / name))
    volume = read(DATA / name)
    assert detect_format(DATA / name) == "minc" and volume.meta["source_format"] == "minc"
    assert np.allclose(volume.affine_lps, RAS_TO_LPS @ image.affine, atol=1e-5)
    expected = np.asarray(image.dataobj, np.float32).transpose(2, 1, 0)
    assert volume.array.dtype == np.float32 and np.allclose(volume.array, expected)
    assert not np.all(volume.array == volume.array.flat[0])


def test_a_4d_parrec_is_read_one_volume_at_a_time_in_the_scanner_s_patient_axes(tmp_path: Path) -> None:
    par = DATA / "phantom_EPI_asc_CLEAR_2_1.PAR"
    image = nib.load(str(par))
    assert count_volumes(par) == 3 and count_volumes(par.with_suffix(".REC")) == 3
    with pytest.raises(InputError, match=r"4D image \(3 volumes, 0\.\.2\): .*--frame N"):
        read(par)
    for path in (par, par.with_suffix(".REC")):  # from either file of the pair
        volume = read(path, volume=1)
        assert volume.meta["source_format"] == "parrec" and volume.meta["modality"] == "MR"
        assert volume.meta["description"].endswith("volume 1 of 3")
        assert np.allclose(volume.affine_lps, RAS_TO_LPS @ image.affine, atol=1e-5)
        assert np.allclose(volume.array, np.asarray(image.dataobj[..., 1], np.float32).transpose(2, 1, 0))
    assert not np.allclose(read(par, volume=0).array, read(par, volume=2).array)
    with pytest.raises(InputError, match="--frame 3: the 4D image has 3 volumes"):
        read(par, volume=3)


def test_each_slice_s_own_rescale_is_applied(tmp_path: Path) -> None:
    """phantom_varscale gives each slice its own rescale slope and intercept: the displayed values are nibabel's."""
    par = DATA / "phantom_varscale.PAR"
    volume = read(par, volume=0)
    assert np.allclose(volume.array, np.asarray(nib.load(str(par)).dataobj[..., 0], np.float32).transpose(2, 1, 0))
    assert not np.allclose(volume.array, read(DATA / "phantom_EPI_asc_CLEAR_2_1.PAR", volume=0).array)


@pytest.mark.parametrize("name", ["minc1_4d.mnc", "minc2_4d.mnc", "minc2-4d-d.mnc"])
def test_a_4d_minc_is_read_one_volume_at_a_time(name: str) -> None:
    """nibabel's 4D MINC-1 and MINC-2 files (time, then zspace / yspace / xspace; minc2-4d-d: time, then xspace /
    yspace / zspace): the volume is the first dimension by its name, the geometry nibabel's affine of the other three.
    They were refused ("4D MINC image ... not read")."""
    path = DATA / name
    image = nib.load(str(path))
    volumes = image.shape[0]
    assert count_volumes(path) == volumes
    with pytest.raises(InputError, match=rf"4D image \({volumes} volumes, 0\.\.{volumes - 1}\): .*--frame N"):
        read(path)
    last = read(path, volume=volumes - 1)
    assert last.meta["description"] == f"MINC geometry from its world axes, volume {volumes - 1} of {volumes}"
    assert np.allclose(last.affine_lps, RAS_TO_LPS @ image.affine, atol=1e-5)
    assert np.allclose(last.array, np.asarray(image.dataobj[volumes - 1], np.float32).transpose(2, 1, 0))
    with pytest.raises(InputError, match=f"--frame {volumes}: the 4D image has {volumes} volumes"):
        read(path, volume=volumes)


def test_a_4d_minc_whose_volumes_are_not_its_first_dimension_is_one_line(monkeypatch) -> None:
    """A vector dimension last (an RGB or displacement MINC) would put the volumes on a spatial axis: refused."""
    from medanomaly.io import neuro

    image = nib.load(str(DATA / "minc2_4d.mnc"))
    image.dataobj.minc_file._dim_names = ["zspace", "yspace", "xspace", "vector_dimension"]
    monkeypatch.setattr(neuro, "_load", lambda path: image)
    for call in (lambda: read(DATA / "minc2_4d.mnc", volume=0), lambda: count_volumes(DATA / "minc2_4d.mnc")):
        with pytest.raises(InputError, match="4D MINC image .*zspace, yspace, xspace, vector_dimension.*mincreshape"):
            call()


def test_a_damaged_minc_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "brain.mnc"
    bad.write_bytes(b"CDF\x01" + b"\xff" * 300)
    with pytest.raises(InputError, match="not a readable minc image"):
        read(bad)


def test_the_voxel_limit_is_checked_from_the_header_before_any_voxel_is_read(monkeypatch) -> None:
    from nibabel.parrec import PARRECArrayProxy

    def never(*args, **kwargs):
        raise AssertionError("voxels read before the limit was checked")

    monkeypatch.setattr(PARRECArrayProxy, "__getitem__", never)
    with pytest.raises(InputError, match="voxel data"):
        read(DATA / "phantom_EPI_asc_CLEAR_2_1.PAR", volume=0, max_voxel_bytes=1000)


def test_an_archive_lists_a_minc_and_a_parrec_as_series_and_the_rec_is_no_problem(tmp_path: Path) -> None:
    from medanomaly.deploy.archive import walk_archive

    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(DATA / "small.mnc", root / "brain.mnc")
    shutil.copy(DATA / "phantom_EPI_asc_CLEAR_2_1.PAR", root / "epi.PAR")
    shutil.copy(DATA / "phantom_EPI_asc_CLEAR_2_1.REC", root / "epi.REC")
    for suffix in (".HEAD", ".BRIK"):
        shutil.copy(DATA / f"scaled+tlrc{suffix}", root / f"anat+tlrc{suffix}")
    index = walk_archive(root)
    (afni,) = [s for s in index.series if s.files[0].suffix == ".HEAD"]
    assert (afni.columns, afni.rows, afni.n_frames) == (47, 54, 43)  # its .BRIK is no problem either
    (minc,) = [s for s in index.series if s.files[0].suffix == ".mnc"]
    assert (minc.columns, minc.rows, minc.n_frames, minc.modality) == (18, 28, 29, "OT")
    assert [p.where for p in index.problems] == ["epi.PAR"]  # a 4D PAR/REC: one frame at a time, not in a batch
    assert "4D image (3 volumes" in index.problems[0].reason


@pytest.mark.parametrize("name", ["scaled+tlrc.HEAD", "scaled+tlrc.BRIK"])
def test_an_afni_dataset_is_read_from_either_file_with_nibabel_s_geometry_and_scale_factors(name: str) -> None:
    """AFNI's one-sub-brick dataset is 3D; its int16 voxels times BRICK_FLOAT_FACS (values ~1e-4: unscaled they would
    be integers up to thousands)."""
    image = nib.load(str(DATA / "scaled+tlrc.HEAD"))
    volume = read(DATA / name)
    assert detect_format(DATA / name) == "afni" and volume.meta["source_format"] == "afni"
    assert volume.shape == (43, 54, 47) and count_volumes(DATA / name) == 1
    assert np.allclose(volume.affine_lps, RAS_TO_LPS @ image.affine, atol=1e-5)
    expected = np.asarray(image.dataobj, np.float32)[..., 0].transpose(2, 1, 0)
    assert np.allclose(volume.array, expected) and 0 < volume.array.max() < 0.01


def test_a_4d_afni_dataset_is_read_one_sub_brick_at_a_time_from_its_gzipped_brik() -> None:
    head = DATA / "example4d+orig.HEAD"
    image = nib.load(str(head))
    assert count_volumes(head) == 3 and count_volumes(DATA / "example4d+orig.BRIK.gz") == 3
    with pytest.raises(InputError, match=r"4D image \(3 volumes, 0\.\.2\): .*--frame N"):
        read(head)
    volume = read(DATA / "example4d+orig.BRIK.gz", volume=2)
    assert volume.meta["description"] == "AFNI geometry from its origin, steps and orientation code, volume 2 of 3"
    assert np.allclose(volume.affine_lps, RAS_TO_LPS @ image.affine, atol=1e-5)
    assert np.allclose(volume.array, np.asarray(image.dataobj[..., 2], np.float32).transpose(2, 1, 0))


#: Each two-file format: (nibabel's header and data files, the names they are copied to).
PAIRS = {"parrec": ("phantom_EPI_asc_CLEAR_2_1.PAR", "phantom_EPI_asc_CLEAR_2_1.REC", "scan.PAR", "scan.REC"),
         "afni": ("scaled+tlrc.HEAD", "scaled+tlrc.BRIK", "anat+orig.HEAD", "anat+orig.BRIK")}  # fmt: skip
HUGE = "a 17 MiB header: more than the 16 MiB a scanner's text header could be; not parsed"


@pytest.mark.parametrize(("kind", "damage", "words"), [
    ("parrec", "no data", "one file of a PAR/REC pair: its .rec is not beside it"),
    ("parrec", "no header", "one file of a PAR/REC pair: its .par is not beside it"),
    ("parrec", "short data", "not a readable parrec image ("),
    ("parrec", "bad header", "not a readable parrec image ("),
    ("parrec", "huge header", HUGE),
    ("afni", "no data", "one file of an AFNI dataset: its .BRIK (or .BRIK.gz) is not beside it"),
    ("afni", "no header", "one file of an AFNI dataset: its .HEAD is not beside it"),
    ("afni", "short data", "not a readable afni image ("),
    ("afni", "bad header", "not a readable afni image ("),
    ("afni", "huge header", HUGE),
])  # fmt: skip
def test_a_half_damaged_or_oversized_pair_is_one_line_naming_the_file(tmp_path: Path, kind: str, damage: str,
                                                                      words: str) -> None:  # fmt: skip
    source_header, source_data, header_name, data_name = PAIRS[kind]
    header, data = tmp_path / header_name, tmp_path / data_name
    shutil.copy(DATA / source_header, header)
    shutil.copy(DATA / source_data, data)
    target = header
    if damage == "no data":
        data.unlink()
    elif damage == "no header":
        header.unlink()
        target = data
    elif damage == "short data":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "huge header":
        with header.open("ab") as fh:
            fh.truncate(17 * 2**20)  # sparse: the size is checked before nibabel reads the text whole
    elif kind == "afni":
        shutil.copy(DATA / "bad_attribute+orig.HEAD", header)  # nibabel's own damaged HEAD
    else:
        header.write_bytes(b"# not a PAR header\n" * 20)
    with pytest.raises(InputError) as caught:
        read(target, volume=0 if kind == "parrec" else None)
    assert words in str(caught.value) and str(caught.value).startswith(str(target)) and "\n" not in str(caught.value)


def test_read_refuses_an_option_it_does_not_know_instead_of_ignoring_it() -> None:
    """``read(par, frame=1)`` ignored ``frame`` (the option is ``volume``) and refused the 4D image as if none was given."""
    with pytest.raises(TypeError, match="unknown option.s. frame: it takes split, volume"):
        read(DATA / "phantom_EPI_asc_CLEAR_2_1.PAR", frame=1)
    assert read(DATA / "phantom_EPI_asc_CLEAR_2_1.PAR", volume=1).array.ndim == 3


@pytest.mark.parametrize(("name", "volume"), [("small.mnc", None), ("phantom_EPI_asc_CLEAR_2_1.PAR", 1),
                                              ("example4d+orig.HEAD", 1)])  # fmt: skip
def test_voxels_are_read_a_few_slices_at_a_time_not_as_one_float64_volume(monkeypatch, name: str,
                                                                           volume: int | None) -> None:  # fmt: skip
    """nibabel gives MINC data (and scaled PAR/REC, AFNI) as float64: read whole, a volume took its float32 size
    four to five times over (small.mnc: 258-301 KB for 58 KB) beyond the limit's count; read slice by slice, the values are
    nibabel's and the peak is under three float32 volumes (the result and its transposed copy)."""
    import tracemalloc

    import medanomaly.io.neuro as neuro

    path = DATA / name
    image = nib.load(path)
    want = np.asarray(image.dataobj[..., volume] if volume is not None else image.dataobj[...], np.float32)
    read(path, volume=volume)  # imports and caches outside the measurement
    monkeypatch.setattr(neuro, "CHUNK_VOXELS", image.shape[0] * image.shape[1], raising=False)  # one slice a chunk
    tracemalloc.start()
    got = read(path, volume=volume)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got.array, want.reshape(image.shape[:3]).transpose(2, 1, 0))
    assert peak < 3 * got.array.nbytes, (peak, got.array.nbytes)
