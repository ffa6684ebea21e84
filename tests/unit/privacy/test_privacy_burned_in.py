"""Done-when: burned-in PHI in the real deid-data ultrasounds is found, blanked and gone for OCR."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from medanomaly.data.sources import real_data
from medanomaly.privacy.burned_in import (
    blank_regions,
    detect_text_regions,
    needs_scan,
    ocr_text,
    redact_dataset,
)
from medanomaly.privacy.deid import DeidConfig, deidentify_file

#: Strings burned into the deid-data ultrasound frames (read off the images; names, MRNs, DOB,
#: dates, site). The test first checks which of them tesseract reads *before* redaction.
PLANTED = {
    "GREYSCALE_IMAGE.dcm": ["ZZZ", "PATIENTFI", "00079241539", "08/29/1951", "CLEVELAN", "03/02/2017", "05:24:57PM"],
    "RGB_IMAGE.dcm": ["ZZZDOWNTIME", "MARY", "120907058", "00047431395", "CLEVELAND", "4/14/2020", "8:48:26"],
}


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).upper()


def _frame(ds) -> np.ndarray:
    arr = ds.pixel_array
    return arr[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_real_ultrasound_burned_in_text_found_blanked_and_unreadable_after(name, key):
    """OCR reads the planted strings before; after redaction it reads none, the scan stays."""
    path = real_data("deid/ultrasounds") / name
    original = pydicom.dcmread(path).pixel_array
    before = _norm(ocr_text(original))
    seen = [s for s in PLANTED[name] if _norm(s) in before]
    assert len(seen) >= 4, f"{name}: OCR read only {seen} before redaction"

    result = deidentify_file(path, key, DeidConfig())
    red = result.redaction
    assert red.scanned and red.changed and len(red.regions) >= 5
    assert red.phi_regions >= 2 and red.residual_phi == 0
    ds = result.dataset
    after = _norm(ocr_text(_frame(ds)))
    assert not [s for s in PLANTED[name] if _norm(s) in after]
    assert not re.search(r"\d{6,}", after)  # no MRN-like number left
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert "ZZZ" not in str(ds.PatientName)  # the header names are gone too
    diff = ds.pixel_array != original
    changed = diff.any(axis=-1) if diff.ndim == 3 else diff
    assert 0 < changed.mean() < 0.10  # text is blanked, the scan itself is not


def _text_image(text_rows: list[str], size=(256, 320), noise=True) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 40, size=size, dtype=np.uint8) if noise else np.zeros(size, np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    for k, row in enumerate(text_rows):
        draw.text((6, 6 + 22 * k), row, fill=255, font=font)
    return np.asarray(img)


def test_detect_and_blank_synthetic_text():
    frame = _text_image(["DOE^JOHN 1234567", "DOB 01/02/1960"])
    regions = detect_text_regions(frame)
    assert regions and all(r.y < 60 for r in regions)
    clean = blank_regions(frame, regions)
    assert detect_text_regions(clean) == []
    assert np.array_equal(clean[80:], frame[80:])  # below the text nothing moved


def test_static_text_in_a_cine_is_found_moving_noise_is_not():
    rng = np.random.default_rng(1)
    text = _text_image(["ACC 99887766"], noise=False)
    frames = np.stack([np.maximum(text, rng.integers(0, 255, text.shape) * (rng.random(text.shape) < 0.02)) for _ in range(5)])
    frames = frames.astype(np.int16) + rng.integers(-4, 5, frames.shape)  # lossy-compression noise
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    regions = detect_text_regions(frames, multiframe=True)
    assert len(regions) == 1 and regions[0].y < 30


def _sc_dataset(frame: np.ndarray, burned_in: str | None):
    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    ds.Modality = "OT"
    ds.set_pixel_data(frame, "MONOCHROME2", 8, generate_instance_uid=False)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


def test_burned_in_annotation_is_respected():
    frame = _text_image(["SMITH 00012345"])
    assert not needs_scan(_sc_dataset(frame, "NO"))
    assert needs_scan(_sc_dataset(frame, "YES"))
    assert needs_scan(_sc_dataset(frame, None))  # OT without the flag: scan
    ds = _sc_dataset(frame, "NO")
    before = ds.PixelData
    assert not redact_dataset(ds).scanned and ds.PixelData == before
    ct = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    assert not needs_scan(ct) and needs_scan(ct, "always") and not needs_scan(_sc_dataset(frame, "YES"), "never")


def test_phi_mode_blanks_only_phi_regions():
    frame = _text_image(["SMITH 00012345", "", "", "", "", "GAIN 60 DR 58"], noise=False)
    ds = _sc_dataset(frame, "YES")
    result = redact_dataset(ds, terms=["SMITH"], mode="phi", ocr_check=False)
    assert result.phi_regions >= 1 and 1 <= len(result.regions) < 3
    assert all(r.y < 40 for r in result.regions)


def test_multiframe_ultrasound_keeps_anatomy(tmp_path, key):
    """The 30-frame echo: static overlay text goes, the moving anatomy stays."""
    src = real_data("deid/ultrasounds") / "ultrasound-multiframe.dcm"
    path = tmp_path / "cine.dcm"
    shutil.copy(src, path)
    result = deidentify_file(path, key, DeidConfig(ocr_check=False))
    assert result.redaction.changed and result.redaction.residual_phi == 0
    original = pydicom.dcmread(src).pixel_array
    changed = np.any(result.dataset.pixel_array != original, axis=-1)
    assert 0 < changed.mean() < 0.05


def test_flagged_file_without_detectable_text_is_refused(tmp_path, key):
    """BurnedInAnnotation YES but nothing found: not released (the detector may have missed it)."""
    from medanomaly.privacy.deid import Refused

    ds = _sc_dataset(np.zeros((64, 64), np.uint8), "YES")
    path = tmp_path / "flagged.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(Refused, match="flagged but no text"):
        deidentify_file(path, key, DeidConfig(ocr_check=False))


def test_real_greyscale_cine_text_gone_from_every_frame(tmp_path, key):
    """deid-data's zipped 27-frame greyscale cine: the same burned-in PHI on every frame."""
    import zipfile

    with zipfile.ZipFile(real_data("deid/ultrasounds") / "GREYSCALE_CINE.zip") as zf:
        zf.extractall(tmp_path)
    (path,) = tmp_path.glob("*.dcm")
    original = pydicom.dcmread(path).pixel_array
    planted = ["00079241539", "08/29/1951", "PATIENTF", "03/02/2017"]
    before = _norm(ocr_text(original[-1]))
    assert sum(_norm(s) in before for s in planted) >= 3
    result = deidentify_file(path, key, DeidConfig(ocr_check=False))
    arr = result.dataset.pixel_array
    assert arr.shape == original.shape and result.redaction.residual_phi == 0
    after = _norm(ocr_text(arr[-1]))  # the last frame: blanking must reach every frame
    assert not [s for s in planted if _norm(s) in after]
    assert 0 < (arr != original).mean() < 0.10


def _shown(ds) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    return apply_color_lut(_frame(ds), ds)


def _banner_text(ds, rows: int) -> str:
    """What tesseract reads in the top ``rows`` of a palette colour frame as shown, upscaled 3x (whole-frame OCR does
    not read a small banner's text)."""
    from medanomaly.privacy.burned_in import to_gray8

    band = to_gray8(_shown(ds)[:rows])
    big = Image.fromarray(band).resize((band.shape[1] * 3, rows * 3), Image.LANCZOS)
    return _norm(ocr_text(np.asarray(big), psm=6))


@pytest.mark.parametrize(("name", "rows", "planted"), [
    ("OBXXXX1A.dcm", 60, ["25/2011", "2:56:22", "11-05-25-142825", "Philips Healthcare"]),  # white on dark blue
    ("gdcm-US-ALOKA-16.dcm", 26, ["WESTWAY", "ULTRASOUND", "11:24:20"]),  # 16-bit palette indices
])  # fmt: skip
def test_palette_colour_ultrasound_text_is_found_in_its_colours(name, rows, planted, key):
    """A palette colour image's pixels are palette indices: the detector and tesseract looked at them as grey levels,
    missed the text of the banner (dates, times, an id, the site), and the file went out "de-identified" with them.
    Now both look at the image through its palette: after redaction OCR reads none of what it read before, the file
    is still a palette colour image, and its big-endian twin (refused before: pydicom writes no big endian) comes out
    with the same pixels."""
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file(name))
    before = _banner_text(pydicom.dcmread(path), rows)
    assert [s for s in planted if _norm(s) in before] == planted, f"{name}: OCR read {before!r} before"
    result = deidentify_file(path, key, DeidConfig())
    ds = result.dataset
    assert result.redaction.changed and result.redaction.residual_phi == 0
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" in ds
    after = _banner_text(ds, rows)
    assert not [s for s in planted if _norm(s) in after], after
    twin = path.with_name(name.replace(".dcm", "_big.dcm") if "ALOKA" in name else name.replace(".dcm", "_expb.dcm"))
    big = deidentify_file(twin, key, DeidConfig()).dataset
    assert big.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(big.pixel_array, ds.pixel_array) and np.array_equal(_shown(big), _shown(ds))


def test_an_uncompressed_ybr_full_422_image_is_not_taken_for_truncated(key):
    """YBR_FULL_422 stores two samples a pixel uncompressed: its pixel data was judged short ("pixel data cannot be
    decoded") against three."""
    from pydicom.data import get_testdata_file

    result = deidentify_file(Path(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")), key, DeidConfig())
    assert result.redaction.scanned and result.dataset.pixel_array.shape == (100, 100, 3)


def test_text_that_is_not_the_same_in_every_frame_is_blanked_where_it_reads_as_phi(key):
    """Only ink static across a cine's frames counted as text (speckle and anatomy move): pydicom's
    ``OBXXXX1A_2frame.dcm``, whose second frame differs from the first everywhere, went out with its banner's date,
    time and id. A multi-frame file's first frame is now also read region by region, and what reads as PHI there is
    blanked in every frame; tesseract then reads none of them (each crop stretched to its own contrast: over the whole
    frame's range the banner's date read as nothing)."""
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("OBXXXX1A_2frame.dcm"))
    planted = ["25/2011", "2:56:22", "11-05-25-142825"]
    source = pydicom.dcmread(path)
    assert [s for s in planted if _norm(s) in _banner_text(source, 60)] == planted
    result = deidentify_file(path, key, DeidConfig())
    assert result.redaction.phi_regions >= 3 and result.redaction.residual_phi == 0
    after = _banner_text(result.dataset, 60)
    assert not [s for s in planted if _norm(s) in after], after
    second, boxes = result.dataset.pixel_array[1] != source.pixel_array[1], np.zeros((600, 800), bool)
    for r in result.redaction.regions:
        boxes[r.y : r.y + r.height, r.x : r.x + r.width] = True
    assert second[:60].any() and not (second & ~boxes).any(), "the same boxes blanked in the second frame, no other"


def test_a_big_endian_palette_is_seen_in_the_colours_of_its_little_endian_twin() -> None:
    """The detector looks through the palette as the image readers apply it: pydicom's ``apply_color_lut`` alone read
    the 16-bit LUT of ``OBXXXX1A_expb.dcm`` (big endian) in the machine's byte order, other colours than its twin's."""
    from pydicom.data import get_testdata_file

    from medanomaly.privacy.burned_in import _shown as seen

    little, big = (pydicom.dcmread(get_testdata_file(n)) for n in ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"))
    assert np.array_equal(seen(big, big.pixel_array[None]), seen(little, little.pixel_array[None]))
