"""Shape features on shapes with known answers; the whole lesion per label before its parts; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from medanomaly.data.sources import pyradiomics_case
from medanomaly.errors import InputError
from medanomaly.quantify.labels import measure_labels
from medanomaly.quantify.shape import shape_features
from medanomaly.types import SHAPE_FEATURES, Finding, Volume


def _strict_loads(text: str):
    """json.loads that refuses NaN / Infinity (they are not JSON)."""

    def refuse(token: str):
        raise ValueError(f"invalid JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------- shape features
def test_shape_single_voxel_octahedron_on_anisotropic_spacing() -> None:
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    sx, sy, sz = 0.5, 2.0, 3.0
    f = shape_features(one, (sx, sy, sz))
    # Marching cubes meshes one voxel as an octahedron with vertices half a voxel from its centre.
    assert f.mesh_volume_ml * 1000 == pytest.approx(sx * sy * sz / 6)
    face = 0.5 * np.sqrt((sy * sz) ** 2 + (sx * sz) ** 2 + (sx * sy) ** 2) / 4
    assert f.surface_area_mm2 == pytest.approx(8 * face)
    assert f.max_diameter_mm == pytest.approx(3.0)  # the z extent
    assert f.max_2d_diameter_slice_mm == pytest.approx(2.0)  # x-y plane: the y extent
    assert f.max_2d_diameter_column_mm == pytest.approx(3.0)  # x-z plane
    assert f.max_2d_diameter_row_mm == pytest.approx(3.0)  # y-z plane
    assert f.major_axis_mm == f.minor_axis_mm == f.least_axis_mm == 0.0
    assert np.isnan(f.elongation) and np.isnan(f.flatness)  # undefined, written as null


@pytest.mark.parametrize("radius", [6, 12])
def test_shape_sphere(radius: int) -> None:
    n = 2 * radius + 5
    g = np.mgrid[:n, :n, :n] - n // 2
    ball = (g**2).sum(axis=0) <= radius**2
    spacing = 0.5
    r_mm = radius * spacing
    f = shape_features(ball, (spacing,) * 3)
    assert f.max_diameter_mm == pytest.approx((2 * radius + 1) * spacing)  # surface half a voxel out
    assert f.mesh_volume_ml * 1000 == pytest.approx(4 / 3 * np.pi * r_mm**3, rel=0.04)
    assert 0.88 < f.sphericity < 1.0
    # A solid ball of radius R: every coordinate variance is R^2 / 5, so each axis is 4 R / sqrt(5).
    for axis in (f.major_axis_mm, f.minor_axis_mm, f.least_axis_mm):
        assert axis == pytest.approx(4 * r_mm / np.sqrt(5), rel=0.01)
    assert f.elongation == pytest.approx(1.0, abs=1e-6) and f.flatness == pytest.approx(1.0, abs=1e-6)


def test_shape_ellipsoid_axes_follow_x_y_z_spacing() -> None:
    # Semi-axes 16 voxels in x, 8 in y, 4 in z; with spacing (1, 2, 4) mm all three are 16 mm.
    g = np.mgrid[-5:6, -9:10, -17:18]
    ell = (g[2] / 16.0) ** 2 + (g[1] / 8.0) ** 2 + (g[0] / 4.0) ** 2 <= 1
    iso = shape_features(ell, (1.0, 1.0, 1.0))
    assert iso.major_axis_mm / iso.minor_axis_mm == pytest.approx(2.0, rel=0.03)
    assert iso.elongation == pytest.approx(0.5, rel=0.03)
    assert iso.flatness == pytest.approx(0.25, rel=0.05)
    assert iso.max_2d_diameter_slice_mm == pytest.approx(33.0)  # x extent, in an axial plane
    assert iso.max_2d_diameter_row_mm == pytest.approx(17.0)  # y extent, in a sagittal plane
    stretched = shape_features(ell, (1.0, 2.0, 4.0))
    assert stretched.elongation == pytest.approx(1.0, abs=0.05)
    assert stretched.flatness == pytest.approx(1.0, abs=0.06)


def test_shape_empty_mask_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        shape_features(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- labels and parts
def _two_label_mask() -> Volume:
    m = np.zeros((4, 20, 20), np.uint8)
    m[1:3, 1:4, 1:4] = 2  # label 2: one part, 18 voxels
    m[1:3, 10:14, 10:14] = 1  # label 1: a 32-voxel part ...
    m[2, 17:19, 2:4] = 1  # ... and a 4-voxel part
    return Volume(m, spacing=(1.0, 1.0, 2.0))


def test_labels_whole_lesion_first_then_parts_largest_first() -> None:
    found = measure_labels(_two_label_mask())
    summary = [(r.label_value, r.part, r.n_parts, r.finding.measurements.n_voxels) for r in found]
    assert summary == [(1, None, 2, 36), (1, 1, 2, 32), (1, 2, 2, 4), (2, None, 1, 18)]
    whole, part1, part2 = (r.finding.measurements for r in found[:3])
    assert whole.volume_ml == pytest.approx(part1.volume_ml + part2.volume_ml)
    assert whole.max_diameter_mm > max(part1.max_diameter_mm, part2.max_diameter_mm)


def test_labels_select_one_label_and_min_voxels() -> None:
    only2 = measure_labels(_two_label_mask(), label=2)
    assert [(r.label_value, r.part) for r in only2] == [(2, None)]
    big_parts = measure_labels(_two_label_mask(), label=1, min_voxels=5)
    assert [(r.part, r.n_parts, r.finding.measurements.n_voxels) for r in big_parts] == [(None, 1, 36)]


def test_labels_bad_masks_refused() -> None:
    mask = _two_label_mask()
    with pytest.raises(InputError, match="label 3"):
        measure_labels(mask, label=3)
    with pytest.raises(InputError, match="empty"):
        measure_labels(mask.with_array(np.zeros((4, 20, 20), np.uint8)))
    with pytest.raises(InputError, match="integer labels"):
        measure_labels(mask.with_array(np.full((4, 20, 20), 0.5, np.float32)))
    signed = np.asarray(mask.array, np.int16).copy()
    signed[0, 0, 0] = -1  # an "ignore" value or an image given as the mask: not a lesion label
    with pytest.raises(InputError, match=r"negative values \(lowest -1\)"):
        measure_labels(mask.with_array(signed))
    with pytest.raises(InputError, match="grid"):
        measure_labels(mask, Volume(np.zeros((4, 20, 21), np.int16)))
    thicker = Volume(np.zeros((4, 20, 20), np.int16), spacing=(*mask.spacing[:2], mask.spacing[2] + 1.0))
    with pytest.raises(InputError, match=r"not on the image grid: spacing \(.*\) mm vs \(.*\) mm"):
        measure_labels(mask, thicker)  # same shape, other spacing: the message says what differs


def test_labels_json_has_shape_keys_and_null_for_undefined() -> None:
    m = np.zeros((3, 5, 5), np.uint8)
    m[1, 2, 2] = 1  # one voxel: elongation and flatness are undefined
    row = measure_labels(Volume(m))[0].to_json()
    assert set(SHAPE_FEATURES) <= set(row) and "max_diameter_mm" in row
    assert row["elongation"] is None and row["mean_hu"] is None  # no image: no intensity statistics
    text = json.dumps(row, allow_nan=False)
    assert _strict_loads(text)["flatness"] is None


def test_finding_json_round_trip_keeps_shape_features() -> None:
    f = measure_labels(_two_label_mask(), label=2)[0].finding
    back = Finding.from_json(f.to_json())
    for name in SHAPE_FEATURES:
        assert getattr(back.measurements, name) == pytest.approx(getattr(f.measurements, name))


def test_labels_real_brain1_whole_lesion_spans_both_parts() -> None:
    from medanomaly.io import read

    image_path, mask_path = pyradiomics_case("brain1")
    rows = measure_labels(read(mask_path), read(image_path))
    assert [(r.part, r.n_parts) for r in rows] == [(None, 2), (1, 2), (2, 2)]
    whole = rows[0].finding
    assert whole.measurements.max_diameter_mm == pytest.approx(69.6009903059, rel=1e-3)  # pyradiomics
    assert rows[1].finding.measurements.max_diameter_mm == pytest.approx(51.2, abs=0.1)  # largest part
    # pyradiomics' diagnostics_Mask-original_CenterOfMass of brain1 (LPS mm)
    assert whole.center_mm == pytest.approx((46.4730443, 16.5185181, 15.5296108), abs=1e-3)


# --------------------------------------------------------------------------- CLI
def test_cli_quantify_json_prints_whole_lesion_and_shape_keys() -> None:
    from medanomaly.cli.app import app

    image_path, mask_path = pyradiomics_case("brain1")
    res = CliRunner().invoke(app, ["quantify", str(image_path), "--mask", str(mask_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = _strict_loads(res.stdout)
    assert [r["part"] for r in rows] == [None, 1, 2] and rows[0]["whole"] is True
    assert set(SHAPE_FEATURES) <= set(rows[0])
    assert rows[0]["max_diameter_mm"] == pytest.approx(69.6, abs=0.05)


def test_cli_quantify_text_and_bad_label(tmp_path, monkeypatch, capsys) -> None:
    import sys

    from medanomaly.cli.app import app, main
    from medanomaly.io import write

    ct = Volume(np.full((4, 20, 20), -800, np.int16), spacing=(1.0, 1.0, 2.0))
    write(ct, tmp_path / "ct.nrrd")
    write(_two_label_mask(), tmp_path / "mask.nrrd")
    runner = CliRunner()
    res = runner.invoke(app, ["quantify", str(tmp_path / "ct.nrrd"), "--mask", str(tmp_path / "mask.nrrd")])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("label 1 (whole, 2 parts)") and lines[1].startswith("  part 1 of 2")
    assert lines[3].startswith("label 2:")
    monkeypatch.setattr(sys, "argv", ["medanomaly", "quantify", str(tmp_path / "ct.nrrd"),
                                      "--mask", str(tmp_path / "mask.nrrd"), "--label", "7"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'mask.nrrd'}: mask has no voxel of label 7"
