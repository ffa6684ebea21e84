"""NRRD / NIfTI / MetaImage through SimpleITK, geometry checked against pynrrd and nibabel."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from medanomaly.data.sources import PYRADIOMICS_CASES, real_data
from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.io.assumed_spacing import assumed_axes
from medanomaly.types import Volume


@pytest.mark.parametrize("case", sorted(PYRADIOMICS_CASES))
def test_io_itk_pyradiomics_nrrd_geometry_vs_pynrrd(case):
    _, image_file, mask_file = PYRADIOMICS_CASES[case]
    path = real_data(f"pyradiomics/{image_file}")
    vol = read(path)
    data, header = nrrd.read(str(path))  # pynrrd: array (x, y, z), space directions rows = axes
    assert header["space"] == "left-posterior-superior"
    directions = np.asarray(header["space directions"], dtype=float)
    spacing = np.linalg.norm(directions, axis=1)
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(vol.origin, header["space origin"], atol=1e-6)
    np.testing.assert_allclose(vol.direction, (directions / spacing[:, None]).T, atol=1e-6)
    np.testing.assert_array_equal(vol.array, np.transpose(data, (2, 1, 0)))
    mask = read(real_data(f"pyradiomics/{mask_file}"))
    assert mask.same_grid(vol) and mask.array.max() >= 1


def test_io_itk_nifti_geometry_vs_nibabel():
    path = real_data("mricron/ch2.nii.gz")
    vol = read(path)
    img = nib.load(str(path))
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # nibabel is RAS
    np.testing.assert_allclose(vol.affine_lps, lps_affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, np.transpose(np.asanyarray(img.dataobj), (2, 1, 0)))
    assert vol.meta["source_format"] == "nifti"


def test_io_itk_nilearn_mni_template():
    path = real_data("nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol = read(path)
    img = nib.load(str(path))
    np.testing.assert_allclose(vol.affine_lps, np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine, atol=1e-4)
    # MNI origin (0, 0, 0 mm) is inside the brain: the voxel there is bright tissue
    idx = np.round(vol.physical_to_index((0.0, 0.0, 0.0))).astype(int)
    assert vol.array[idx[2], idx[1], idx[0]] > np.percentile(vol.array, 60)


def test_io_itk_cranium_is_a_head_ct_in_hu_with_anterior_up():
    vol = read(real_data("invesalius/cranium.nrrd"))
    assert vol.modality == "CT" and vol.meta["units"] == "HU"
    assert vol.shape == (108, 256, 256)
    np.testing.assert_allclose(vol.spacing, (0.957, 0.957, 1.5), atol=1e-3)
    a = vol.array
    assert a.min() == -1024  # air outside the scan field
    brain = a[60, 100:160, 100:160]  # central brain in a mid-upper slice: soft tissue 0..80 HU
    assert 0 < np.median(brain) < 80
    assert (a > 700).mean() > 0.01  # skull bone
    # Anterior = low y rows (LPS): the sinuses and nasal cavity (air enclosed by tissue along y,
    # at the midline of the lower slices) must all lie in the anterior half.
    sub = a[10:50, :, 108:148]
    tissue = sub > -300
    first = np.argmax(tissue, axis=1)
    last = tissue.shape[1] - 1 - np.argmax(tissue[:, ::-1, :], axis=1)
    y = np.arange(a.shape[1])[None, :, None]
    enclosed_air = (y > first[:, None, :]) & (y < last[:, None, :]) & (sub < -500)
    y_air = np.nonzero(enclosed_air)[1]
    assert y_air.size > 1000 and np.mean(y_air < a.shape[1] // 2) > 0.95
    # Superior slices are smaller (the vertex): head area shrinks from middle to top
    area = (a > -300).reshape(108, -1).sum(axis=1)
    assert area[100] < area[50]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_io_itk_write_read_round_trip(tmp_path, suffix):
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated 90 deg in-plane
    src = Volume(
        np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6),
        spacing=(0.5, 0.75, 2.0),
        origin=(-10.0, 20.0, 5.5),
        direction=direction,
        meta={"modality": "CT"},
    )
    out = write(src, tmp_path / f"vol{suffix}")
    back = read(out)
    assert back.same_grid(src, tol=1e-5)
    np.testing.assert_array_equal(back.array, src.array)
    if suffix != ".nii.gz":
        assert back.modality == "CT"


def test_io_itk_errors(tmp_path):
    bad = tmp_path / "broken.nrrd"
    bad.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n" + "x" * 20)
    with pytest.raises(InputError, match="broken.nrrd: not a readable nrrd image"):
        read(bad)
    ascii_bad = tmp_path / "ascii.nrrd"  # teem's function name was in the reason: "([nrrd] _nrrdEncodingAscii_read: ..."
    ascii_bad.write_text("NRRD0004\ntype: short\ndimension: 2\nsizes: 2 2\nencoding: ascii\n\n1 2 x 4")
    with pytest.raises(InputError, match=r"ascii\.nrrd: not a readable nrrd image \(couldn't parse element 3 of 4"):
        read(ascii_bad)
    with pytest.raises(InputError, match="unknown image extension"):
        from medanomaly.io.itk import write_itk

        write_itk(Volume(np.zeros((2, 2, 2))), tmp_path / "x.xyz")


def test_io_itk_4d_nifti_refused(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4))
    nib.save(img, tmp_path / "fmri.nii.gz")
    with pytest.raises(InputError, match=r"fmri.nii.gz: 4D image \(3 volumes, 0..2\)"):
        read(tmp_path / "fmri.nii.gz")


@pytest.mark.parametrize(("units", "mm_per_unit"), [('"m" "m" "m"', 1000.0), ('"cm" "cm" "cm"', 10.0),
                                                    ('"um" "um" "um"', 0.001), ('"mm" "mm" "mm"', 1.0)])
def test_io_nrrd_space_units_are_converted_to_mm(tmp_path, units, mm_per_unit):
    """ITK drops an NRRD's ``space units``: a grid written in metres read as millimetres, every length 1000 times
    short. The header's unit is converted (pynrrd writes the file, as 3D Slicer would); units that are not one
    length for every axis are refused in one line."""
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.8, 0.9, 2.0]) / mm_per_unit,
              "space origin": np.array([50.0, -20.0, 100.0]) / mm_per_unit, "space units": units.strip('"').split('" "')}
    nrrd.write(str(tmp_path / "grid.nrrd"), np.zeros((6, 5, 4), np.int16), header)
    got = read(tmp_path / "grid.nrrd")
    np.testing.assert_allclose(got.spacing, (0.8, 0.9, 2.0), rtol=1e-6)
    np.testing.assert_allclose(got.origin, (50.0, -20.0, 100.0), rtol=1e-6)
    header["space units"] = ["mm", "mm", "s"]
    nrrd.write(str(tmp_path / "time.nrrd"), np.zeros((6, 5, 4), np.int16), header)
    with pytest.raises(InputError, match='NRRD space units "mm" "s" are not one length'):
        read(tmp_path / "time.nrrd")


@pytest.mark.parametrize("field", ["spacings: nan 0.9 2", "space: left-posterior-superior\nspace directions: (nan,nan,nan) "
                                   "(0,0.9,0) (0,0,2)"])  # fmt: skip
def test_an_nrrd_whose_spacing_is_nan_is_marked_as_assumed(tmp_path, field):
    """NRRD writes an unknown spacing as ``nan``; ITK read it as 1 mm and nothing said the mm were a guess. The image
    is now marked as a DICOM without PixelSpacing is (``spacing_assumed``); a nan along an axis of one sample (a
    single slice's thickness) changes no measurement and is not."""
    for sizes, name in (("4 5 6", "unknown.nrrd"), ("4 5 1", "flat.nrrd")):
        header = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\n{field}\n"
        if name == "flat.nrrd":
            header = header.replace("nan 0.9 2", "0.8 0.9 nan").replace("(nan,nan,nan) (0,0.9,0) (0,0,2)",
                                                                          "(0.8,0,0) (0,0.9,0) (nan,nan,nan)")  # fmt: skip
        count = int(np.prod([int(v) for v in sizes.split()]))
        (tmp_path / name).write_bytes(f"{header}encoding: raw\n\n".encode() + bytes(count))
    unknown = read(tmp_path / "unknown.nrrd")
    assert unknown.meta.get("spacing_assumed") is True and assumed_axes(unknown) == ("x",)
    flat = read(tmp_path / "flat.nrrd")
    np.testing.assert_allclose(flat.spacing[:2], (0.8, 0.9))
    assert "spacing_assumed" not in flat.meta


def _raw_nrrd(path, fields: str, count: int) -> None:
    path.write_bytes(f"NRRD0004\ntype: uint8\n{fields}\nencoding: raw\n\n".encode() + bytes(count))


def test_an_nrrd_vectors_nan_spacing_is_no_unstated_grid_spacing(tmp_path):
    """A vector image's NRRD gives its component axis the spacing ``nan``, as the format asks (teem writes it so):
    every grid spacing is stated, yet the image was marked "1 mm assumed, lengths are pixels"."""
    _raw_nrrd(tmp_path / "vector.nrrd", "dimension: 4\nsizes: 3 4 5 6\nkinds: vector domain domain domain\n"
              "spacings: nan 0.5 0.5 2", 3 * 4 * 5 * 6)  # fmt: skip
    vector = read(tmp_path / "vector.nrrd")
    assert vector.n_components == 3 and vector.spacing == (0.5, 0.5, 2.0)
    assert "spacing_assumed" not in vector.meta
    _raw_nrrd(tmp_path / "unknown_z.nrrd", "dimension: 4\nsizes: 3 4 5 6\nkinds: vector domain domain domain\n"
              "spacings: nan 0.5 0.5 nan", 3 * 4 * 5 * 6)  # fmt: skip
    assert assumed_axes(read(tmp_path / "unknown_z.nrrd")) == ("z",)


def test_the_unstated_axis_is_followed_through_a_reorientation():
    """The axes are recorded as patient directions, so a sagittal image reoriented to LPS (its grid axes permuted)
    still names the axis whose spacing was taken, and the note names it (not "lengths are pixels")."""
    from medanomaly.io.assumed_spacing import spacing_assumed_meta, spacing_note
    from medanomaly.preprocess.resample import to_canonical

    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # x: posterior, y: superior, z: left
    volume = Volume(np.zeros((6, 5, 4), np.int16), spacing=(0.7, 0.7, 1.0), direction=sagittal,
                    meta=spacing_assumed_meta(sagittal, [2]))  # fmt: skip
    assert assumed_axes(volume) == ("z",)
    canonical = to_canonical(volume)
    assert canonical.shape == (5, 4, 6) and canonical.spacing == (1.0, 0.7, 0.7) and assumed_axes(canonical) == ("x",)
    assert spacing_note(canonical).startswith("the image states no spacing along x (1 voxel counted as 1 mm there)")
    turn = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    oblique = Volume(canonical.array, spacing=canonical.spacing, meta=dict(canonical.meta),  # turned 30 deg about z
                     direction=np.array([[turn[0], -turn[1], 0.0], [turn[1], turn[0], 0.0], [0.0, 0.0, 1.0]]))
    assert assumed_axes(oblique) == ("x", "y")  # x and y each have a part along the unstated direction; z none


def test_a_direction_matrix_without_independent_axes_is_named(tmp_path):
    """A sagittal NRRD whose slice direction is nan (ITK takes (0, 0, 1): a singular matrix) and a MetaImage whose
    TransformMatrix repeats an axis were "not a readable nrrd image (0 1 1)", the matrix's last row."""
    _raw_nrrd(tmp_path / "sagittal.nrrd", "dimension: 3\nsizes: 4 5 6\nspace: left-posterior-superior\n"
              "space directions: (0,0.7,0) (0,0,0.7) (nan,nan,nan)", 4 * 5 * 6)  # fmt: skip
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_UCHAR\n"
              "TransformMatrix = 1 0 0 1 0 0 0 0 1\nElementDataFile = LOCAL\n")  # fmt: skip
    (tmp_path / "parallel.mha").write_bytes(header.encode() + bytes(4 * 5 * 6))
    for name in ("sagittal.nrrd", "parallel.mha"):
        with pytest.raises(InputError, match="the axes' directions are not independent"):
            read(tmp_path / name)


def test_a_negative_size_in_the_header_is_named(tmp_path):
    """MetaIO reads ``DimSize = 4 -5 6`` as unsigned: the size limit then spoke of 96 GiB of voxel data; teem called
    an NRRD's ``sizes: 4 -5 6`` "axis 1 size is zero!"."""
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 -5 6\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    (tmp_path / "negative.mha").write_bytes(header.encode() + bytes(120))
    with pytest.raises(InputError, match=r"size of axis 1 \(counting from 0\) is -5: sizes must be positive"):
        read(tmp_path / "negative.mha")
    _raw_nrrd(tmp_path / "negative.nrrd", "dimension: 3\nsizes: 4 -5 6", 120)
    with pytest.raises(InputError, match="an axis size of 0 or less in the header's sizes"):
        read(tmp_path / "negative.nrrd")


@pytest.mark.parametrize("spacing", ["0 1 1", "nan 1 1", "1 inf 1"])
def test_a_metaimage_with_a_zero_or_unreadable_spacing_says_so(tmp_path, spacing):
    """ITK parses nan and inf as 0 and refused with "Refusing to change spacing from [1, 1, 1] to [0, 1, 1]"."""
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_SHORT\nElementSpacing = {spacing}\n"
              "ElementDataFile = LOCAL\n")  # fmt: skip
    (tmp_path / "grid.mha").write_bytes(header.encode() + bytes(2 * 6 * 5 * 4))
    with pytest.raises(InputError, match=r"a voxel spacing of 0 \(or not a number\): spacings must be positive, mm"):
        read(tmp_path / "grid.mha")
