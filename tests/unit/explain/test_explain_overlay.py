"""Overlays (PNG, NIfTI) and DICOM secondary capture."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from medanomaly.errors import InputError
from medanomaly.explain.dicom_out import blend_slice, write_secondary_capture
from medanomaly.explain.overlay import _to_lps, overlay_png, save_explanation
from medanomaly.io import read
from medanomaly.types import Volume


def _scene():
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 1, (6, 20, 30)).astype(np.float32)
    heat = np.zeros_like(arr)
    heat[4, 5, 25] = 1.0
    mask = np.zeros(arr.shape, np.uint8)
    mask[3:6, 3:8, 22:28] = 1
    img = Volume(arr, spacing=(0.8, 0.6, 3.0), origin=(10, 20, 30))
    return img, img.with_array(heat), img.with_array(mask)


def test_overlay_3d_has_three_panels_and_is_orientation_invariant(tmp_path):
    """The same anatomy stored with a flipped x axis renders to the same picture (shown in LPS)."""
    img, heat, mask = _scene()
    a = overlay_png(img, heat, tmp_path / "a.png", mask=mask, method="gradcam")
    flip = np.diag([-1.0, 1.0, 1.0])
    origin = img.index_to_physical((img.shape[2] - 1, 0, 0))

    def flipped(v: Volume) -> Volume:
        return Volume(v.array[:, :, ::-1].copy(), spacing=v.spacing, origin=origin, direction=flip, meta=dict(v.meta))

    np.testing.assert_array_equal(_to_lps(flipped(img)).array, img.array)
    b = overlay_png(flipped(img), flipped(heat), tmp_path / "b.png", mask=flipped(mask), method="gradcam")
    pa, pb = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert pa.shape == pb.shape and pa.shape[1] > 2.5 * pa.shape[0]  # three panels side by side
    np.testing.assert_array_equal(pa, pb)


def test_overlay_2d_and_grid_checks(tmp_path):
    img = Volume(np.random.default_rng(1).random((32, 48)).astype(np.float32), spacing=(0.2, 0.2, 1))
    heat = img.with_array(np.random.default_rng(2).random((32, 48)).astype(np.float32))
    out = save_explanation(img, heat, tmp_path, stem="x", method="occlusion")
    png = np.asarray(Image.open(out["png"]))
    assert png.shape[1] < 2 * png.shape[0]  # one panel
    back = read(out["nifti"])
    assert back.same_grid(heat)
    np.testing.assert_allclose(back.array, heat.array, rtol=1e-6)
    other = Volume(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InputError, match="not on the image grid"):
        overlay_png(img, other, tmp_path / "bad.png")


def test_real_ct_overlay_marks_the_lesion(tmp_path):
    """On lung1 (real CT), a map peaking in the nodule is drawn with its contour; pixels show it."""
    from medanomaly.data.sources import pyradiomics_case

    image_path, mask_path = pyradiomics_case("lung1")
    img, mask = read(image_path).with_meta(modality="CT"), read(mask_path)
    zz, yy, xx = np.nonzero(mask.array)
    z, y, x = int(np.median(zz)), int(np.median(yy)), int(np.median(xx))
    heat = np.zeros(img.shape, np.float32)
    heat[z - 1 : z + 2, y - 8 : y + 8, x - 8 : x + 8] = 1.0
    path = overlay_png(img, img.with_array(heat), tmp_path / "lung1.png", mask=mask, method="gradcam", fov_mm=80)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    cyan = (rgb[..., 0] < 80) & (rgb[..., 1] > 180) & (rgb[..., 2] > 180)
    assert cyan.sum() > 50  # the lesion contour is drawn


def test_dicom_secondary_capture(tmp_path):
    img, heat, mask = _scene()
    (path,) = write_secondary_capture(img, heat, tmp_path, mask=mask)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.pixel_array.shape == (20, 30, 3)
    assert str(ds.PatientName) == "Anonymous^" and ds.PatientID == "ANONYMOUS"
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.6, 0.8])
    rgb = blend_slice(img, heat, 4, mask=mask)
    assert tuple(rgb[5, 22]) == (0, 255, 255)  # contour pixel
    many = write_secondary_capture(img, heat, tmp_path / "all", slices="all")
    assert len(many) == 6
    ref = pydicom.dcmread(path)
    (linked,) = write_secondary_capture(img, heat, tmp_path / "ref", reference=ref)
    assert pydicom.dcmread(linked).StudyInstanceUID == ref.StudyInstanceUID
