"""PNG/JPEG pictures: ITK's real MRI slice pair, round trips, display windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.io.assumed_spacing import assumed_axes
from medanomaly.io.png import to_uint8
from medanomaly.types import Volume


def test_io_png_itk_mri_pair():
    t1 = read(real_data("itk/BrainT1Slice.png"))
    pd = read(real_data("itk/BrainProtonDensitySlice.png"))
    assert t1.shape == pd.shape == (1, 217, 181)
    assert t1.n_components == 1  # stored as RGB with equal channels: read as grey
    ref = np.asarray(Image.open(real_data("itk/BrainT1Slice.png")).convert("L"))
    np.testing.assert_array_equal(t1.array[0], ref)
    assert t1.meta["source_format"] == "png" and t1.is_2d
    # two contrasts of one subject: correlated but not identical
    r = np.corrcoef(t1.array.ravel(), pd.array.ravel())[0, 1]
    assert 0.2 < abs(r) < 0.99


def test_io_png_round_trip_uint8_uint16_rgb(tmp_path):
    grey = Volume(np.arange(60, dtype=np.uint8).reshape(1, 6, 10), spacing=(0.5, 0.5, 1.0))
    back = read(write(grey, tmp_path / "g.png"))
    np.testing.assert_array_equal(back.array, grey.array)
    deep = Volume((np.arange(60, dtype=np.uint16) * 1000).reshape(1, 6, 10))
    np.testing.assert_array_equal(read(write(deep, tmp_path / "d.png")).array, deep.array)
    rgb = Volume(np.random.default_rng(0).integers(0, 255, (1, 6, 10, 3), dtype=np.uint8))
    back = read(write(rgb, tmp_path / "c.png"))
    assert back.n_components == 3
    np.testing.assert_array_equal(back.array, rgb.array)


def test_io_png_ct_window_and_3d_slice(tmp_path):
    ct = Volume(np.array([[[-1000, -600, 40, 3000]]], dtype=np.int16).repeat(3, axis=0), meta={"modality": "CT"})
    with pytest.raises(InputError, match="one slice"):
        write(ct, tmp_path / "x.png")
    out = read(write(ct, tmp_path / "x.png", window=(40.0, 400.0), slice_index=1))
    np.testing.assert_array_equal(out.array[0, 0], [0, 0, 128, 255])
    np.testing.assert_array_equal(to_uint8(np.array([-600.0, 150.0]), (-600.0, 1500.0)), [128, 255])


def test_io_png_jpeg_and_bad_picture(tmp_path):
    photo = tmp_path / "fundus.jpg"
    Image.fromarray(np.full((8, 8, 3), (200, 40, 30), np.uint8)).save(photo)
    vol = read(photo)
    assert vol.n_components == 3 and vol.meta["source_format"] == "jpeg"
    broken = tmp_path / "broken.png"
    broken.write_bytes(real_data("itk/BrainT1Slice.png").read_bytes()[:200])
    with pytest.raises(InputError, match="broken.png: not a readable png"):
        read(broken)


def test_png_native_remarks_go_to_the_log_not_the_terminal(capfd, caplog):
    """ITK's own example PNGs make libpng print "libpng warning: sCAL: invalid unit" three times on file
    descriptor 2: a good file then printed three lines, and a bad input four instead of one."""
    import logging
    import os

    from medanomaly.io.itk import native_remarks_logged

    with caplog.at_level(logging.DEBUG, logger="medanomaly.io"):
        vol = read(real_data("itk/FFTCosinus.png"))
    assert vol.shape[0] == 1
    assert "libpng" not in capfd.readouterr().err
    assert any("FFTCosinus.png: libpng warning" in r.getMessage() for r in caplog.records)
    with native_remarks_logged(Path("x.png")):
        os.write(2, b"libpng warning: a remark\nsomething else\n")
        os.write(1, b"Premature end of JPEG file\nan answer\n")
    out, err = capfd.readouterr()
    assert err == "something else\n" and out == "an answer\n"  # what is not a known remark is passed on


def test_a_damaged_picture_is_one_line_with_the_decoders_word_and_stdout_stays_clean(tmp_path):
    """libjpeg wrote "Premature end of JPEG file" on standard output: `info --json` of a JPEG cut short (still
    decodable) printed it before its JSON, which a reader of that output could not parse; a JPEG cut in half printed
    two libjpeg lines, and a PNG with a bad chunk libpng's "libpng error: ..." line, above our one line. Now stdout
    holds the JSON alone, and the decoder's word is in the one line."""
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / "full.jpg", quality=90)
    whole = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "tail_cut.jpg").write_bytes(whole[:-200])
    (tmp_path / "half.jpg").write_bytes(whole[: len(whole) // 2][:300])

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "medanomaly.cli.app", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)  # fmt: skip

    done = cli("info", "tail_cut.jpg", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["shape"] == [1, 64, 64], done.stdout[:200]
    broken = cli("info", "half.jpg")
    assert broken.returncode == 2 and broken.stdout == "" and broken.stderr.strip().splitlines() == [
        "error: half.jpg: not a readable jpeg image (corrupt or truncated: Invalid JPEG file structure: missing SOS "
        "marker)"], (broken.stdout, broken.stderr)


def test_a_grey_alpha_png_is_read_as_grey_and_two_components_are_not_written(tmp_path):
    """SimpleITK cannot read an 8-bit grey + alpha PNG ("Unknown PixelType"): it was "corrupt or truncated"; our own
    writer made such a file from a two-channel volume and could not read it back."""
    pixels = np.zeros((6, 7, 2), np.uint8)
    pixels[..., 0], pixels[..., 1] = np.arange(42).reshape(6, 7), 128
    Image.fromarray(pixels, "LA").save(tmp_path / "la.png")
    grey = read(tmp_path / "la.png")
    assert grey.shape == (1, 6, 7) and grey.n_components == 1 and grey.meta["photometric"] == "MONOCHROME2"
    np.testing.assert_array_equal(grey.array[0], pixels[..., 0])
    with pytest.raises(InputError, match="a picture holds grey, RGB or RGBA pixels; this volume has 2 components"):
        write(Volume(pixels[None]), tmp_path / "two.png")
    assert not (tmp_path / "two.png").exists()


def test_an_animated_png_is_refused_instead_of_read_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((20, 16), 40 * k, np.uint8)) for k in range(3)]
    frames[0].save(tmp_path / "loop.png", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="animated PNG with 3 frames") as err:
        read(tmp_path / "loop.png")
    assert "loop.png" in str(err.value)
    frames[1].save(tmp_path / "one.png")  # a single frame still reads
    assert read(tmp_path / "one.png").array.max() == 40


def test_a_multi_page_tiff_whose_pages_differ_in_size_says_so(tmp_path):
    """Its pages are the slices of one volume to SimpleITK, which refused it: the file was called "corrupt or
    truncated", which it is not."""
    first, second = Image.fromarray(np.zeros((50, 40), np.uint8)), Image.fromarray(np.full((30, 70), 9, np.uint8))
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[second])
    with pytest.raises(InputError, match=r"pages.tif: multi-page TIFF whose pages differ in size \(40 x 50 and 70 x 30"):
        read(tmp_path / "pages.tif")
    first.save(tmp_path / "stack.tif", save_all=True, append_images=[first])  # equal pages: a two-slice stack
    stack = read(tmp_path / "stack.tif")
    assert stack.shape == (2, 50, 40) and assumed_axes(stack) == ("x", "y", "z")  # pages 1 mm apart: taken too


def _viewer_shows(path: Path) -> np.ndarray:
    """What a viewer shows: Pillow's exif_transpose of a PNG (Pillow's own TIFF loader turns some pages itself)."""
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(path)))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
@pytest.mark.parametrize("grey", [True, False])
def test_a_picture_is_read_turned_as_its_exif_orientation_says(tmp_path, fmt, grey):
    """SimpleITK ignores the EXIF orientation of a JPEG or a PNG (a picture stored sideways, orientation 6, was read
    sideways though every viewer shows it upright) and libtiff's reader applies a TIFF's flips but no quarter turn:
    every orientation 1..8 now reads as the viewer shows it, and a quarter turn swaps the pixel spacings."""
    stored = (np.arange(40 * 60).reshape(40, 60) % 251).astype(np.uint8)
    stored[5:10, 3:20] = 255  # a mark that tells every turn apart
    picture = Image.fromarray(stored if grey else np.stack([stored, stored // 2, 255 - stored], -1))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.{fmt}"
        picture.save(path, exif=exif, **({"quality": 100, "subsampling": 0} if fmt == "jpeg" else {}))
        picture.save(tmp_path / f"truth{orientation}.png", exif=exif)
        got = read(path)
        truth = _viewer_shows(tmp_path / f"truth{orientation}.png")
        assert got.array[0].shape == truth.shape, orientation
        assert np.abs(got.array[0].astype(int) - truth.astype(int)).max() <= 3, orientation
        assert got.meta.get("exif_orientation") == (orientation if orientation != 1 else None)


def test_a_deep_tiff_with_an_orientation_is_refused_not_read_at_8_bits(tmp_path):
    """ITK reads a TIFF whose orientation is not top-left through libtiff's 8-bit RGBA reader: a 16-bit picture came
    back with grey levels 0..159 instead of 0..40783, with only an ITK warning on the terminal."""
    stored = (np.arange(40 * 60).reshape(40, 60) * 17).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(stored).save(tmp_path / "turned.tiff", exif=exif)
    with pytest.raises(InputError, match="16-bit TIFF with orientation 3 .*save it with orientation 1"):
        read(tmp_path / "turned.tiff")
    Image.fromarray(stored).save(tmp_path / "upright.tiff")
    assert read(tmp_path / "upright.tiff").array.max() == stored.max()


def test_a_mask_turned_otherwise_than_its_image_is_refused(tmp_path):
    """An image stored upside down with EXIF orientation 3 and its mask saved without the tag: each is read upright as
    a viewer shows it, so which way the mask was drawn is unknown; a 180-degree turn passed every grid check and the
    lesion was measured in the wrong corner. The same orientation on both is read."""
    from medanomaly.io import read_mask

    stored = np.zeros((40, 60), np.uint8)
    stored[2:8, 3:9] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(stored).save(tmp_path / "image.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "mask.png")
    Image.fromarray(stored).save(tmp_path / "mask_tagged.png", exif=exif)
    image = read(tmp_path / "image.png")
    with pytest.raises(InputError, match=r"mask\.png: the image is turned by EXIF orientation 3 and the mask by 1"):
        read_mask(tmp_path / "mask.png", image)
    mask = read_mask(tmp_path / "mask_tagged.png", image)
    assert np.array_equal(mask.array, image.array) and mask.array[0, -3, -4] == 255  # both turned the same way


def test_a_picture_without_pixel_spacing_says_its_millimetres_are_pixels(tmp_path):
    """A PNG states no pixel spacing (ITK reads none from it), and neither does a JPEG without a density: 1 mm was
    taken and every length and area reported in "mm" without a word; meta["spacing_assumed"] says so now (quantify and
    info show it)."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "plain.png")
    assert read(tmp_path / "plain.png").meta.get("spacing_assumed") is True


@pytest.mark.parametrize("name", ["dense.jpg", "dense.tif", "dense.png"])
def test_a_pictures_print_resolution_is_not_taken_as_its_pixel_spacing(tmp_path, name):
    """ITK took a JPEG's or TIFF's print density as spacing (300 dpi: 0.085 mm) and a PNG's not at all, so one
    ultrasound frame measured 12 times smaller saved as JPEG than as PNG, and a 72-dpi export (every screenshot) put a
    100-pixel lesion at 35 mm. A dpi says how large to print the picture, not how large the patient is: every picture
    is read in pixels (spacing_assumed), its JPEG / TIFF dpi kept aside for `info`, turned with the picture."""
    picture = Image.fromarray(np.zeros((6, 8), np.uint8))
    picture.save(tmp_path / name, dpi=(300, 150))
    dense = read(tmp_path / name)
    assert dense.spacing == (1.0, 1.0, 1.0) and dense.meta["spacing_assumed"] is True
    if name != "dense.png":  # ITK reads no pHYs from a PNG
        assert dense.meta["print_resolution_dpi"] == pytest.approx([300.0, 150.0], abs=0.01)
    exif = Image.Exif()
    exif[0x0112] = 6
    picture.save(tmp_path / "turned.jpg", dpi=(300, 150), exif=exif)
    assert read(tmp_path / "turned.jpg").meta["print_resolution_dpi"] == pytest.approx([150.0, 300.0], abs=0.01)
