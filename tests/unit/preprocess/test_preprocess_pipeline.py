"""The YAML pipeline: registry-built steps, records, mapping back; the CLI commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medanomaly.errors import ConfigError, InputError
from medanomaly.io import read, write
from medanomaly.preprocess.pipeline import Pipeline
from medanomaly.registry import TRANSFORMS
from medanomaly.types import Volume

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "preprocess_lung.yaml"


def _small_ct(ct: Volume) -> Volume:
    """The central 12 slices of lung1, every second pixel (keeps the tests fast)."""
    z0 = ct.shape[0] // 2 - 6
    arr = ct.array[z0 : z0 + 12, ::2, ::2]
    origin = ct.index_to_physical([0, 0, z0])
    return Volume(arr, spacing=(ct.spacing[0] * 2, ct.spacing[1] * 2, ct.spacing[2]), origin=tuple(origin),
                  direction=ct.direction, meta={"modality": "CT"})  # fmt: skip


def test_registry_has_every_step_and_each_builds():
    expected = {"window", "multi_window", "denoise", "clahe", "equalize", "gamma", "random_gamma", "unsharp",
                "minmax", "zscore", "percentile_clip", "hu_clip", "mask_roi", "resample", "crop_or_pad",
                "crop_to_roi", "canonical"}  # fmt: skip
    assert expected <= set(TRANSFORMS.names())
    for name in TRANSFORMS.names():
        step = TRANSFORMS.create(name)
        assert step.name == name and isinstance(step.params, dict)


def test_example_config_runs_on_real_ct_and_maps_back(lung1_ct):
    ct = _small_ct(lung1_ct)
    result = Pipeline.from_yaml(CONFIG)(ct)
    names = [r.name for r in result.records]
    assert names == ["mask_roi", "window", "denoise", "crop_to_roi", "resample"]
    out = result.volume
    assert out.spacing == pytest.approx((1.0, 1.0, 2.5)) and 0.0 <= out.array.min() and out.array.max() <= 1.0
    rec = {r.name: r for r in result.records}
    assert rec["window"].applied == {"low_hu": -1350.0, "high_hu": 150.0}
    assert rec["mask_roi"].applied["roi_ml"] > 100
    assert rec["crop_to_roi"].spatial and rec["crop_to_roi"].output_grid.shape != rec["crop_to_roi"].input_grid.shape
    # the lung mask followed the spatial steps; mapped back it matches a mask made on the original
    lung_out = result.masks["lung"]
    assert lung_out.same_grid(out)
    back = result.mask_to_original(lung_out)
    assert back.same_grid(ct)
    from medanomaly.preprocess.segment import lung_mask

    ref = lung_mask(ct).array > 0
    dice = 2 * ((back.array > 0) & ref).sum() / ((back.array > 0).sum() + ref.sum())
    assert dice > 0.9
    js = json.dumps(result.to_json())
    assert "crop_to_roi" in js and "output_grid" in js


def test_random_gamma_records_and_reproduces():
    vol = Volume(np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8))
    a = Pipeline.from_config([{"name": "random_gamma", "low": 0.5, "high": 2.0, "seed": 7}])(vol)
    b = Pipeline.from_config([{"name": "random_gamma", "low": 0.5, "high": 2.0, "seed": 7}])(vol)
    g = a.records[0].applied["gamma"]
    assert 0.5 <= g <= 2.0 and g == b.records[0].applied["gamma"]
    assert np.allclose(a.volume.array, vol.array**g, atol=1e-5)


def test_window_step_explicit_bounds_and_conflicts():
    vol = Volume(np.array([[[-1000.0, 0.0, 100.0]]], np.float32), meta={"modality": "CT"})
    out = Pipeline.from_config([{"name": "window", "low": -100, "high": 100}])(vol)
    assert out.volume.array.ravel().tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert out.records[0].applied == {"low_hu": -100.0, "high_hu": 100.0}
    assert TRANSFORMS.create("window").params["preset"] == "lung"
    with pytest.raises(ConfigError, match="not both"):
        TRANSFORMS.create("window", preset="bone", low=0, high=1)


def test_pipeline_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown transform"):
        Pipeline.from_config([{"name": "sharpen_magic"}])
    with pytest.raises(ConfigError, match=r"step 1 \(window\): unknown parameter\(s\) colour; valid: preset, low, high"):
        Pipeline.from_config([{"name": "window", "colour": "red"}])
    with pytest.raises(ConfigError, match=r"step 2: unknown transform 'windw'"):
        Pipeline.from_config([{"name": "window"}, {"name": "windw"}])
    with pytest.raises(ConfigError, match="unknown denoise"):
        Pipeline.from_config([{"name": "denoise", "method": "magic"}])
    # A denoise option its method does not take: refused when built (it was the function's TypeError, after the image
    # was read, printed as an error of the image)
    with pytest.raises(ConfigError, match=r"^step 1 \(denoise\): denoise nl_means: unknown option\(s\) strength; valid: "
                                          r"h, patch_size, patch_distance, per_slice$"):  # fmt: skip
        Pipeline.from_config([{"name": "denoise", "method": "nl_means", "strength": 3}])
    Pipeline.from_config([{"name": "denoise", "method": "curvature", "iterations": 2}])  # its own options still pass
    # Found by a sweep of odd values over every step's every parameter: a method given as a list ("unhashable type:
    # 'list'") and windows that are no mapping (an AttributeError, a traceback)
    with pytest.raises(ConfigError, match=r"^step 1 \(denoise\): unknown denoise method \['gaussian'\]; valid: "):
        Pipeline.from_config([{"name": "denoise", "method": ["gaussian"]}])
    with pytest.raises(ConfigError, match=r"^step 1 \(modality_intensity\): windows: Input should be a valid dictionary$"):
        Pipeline.from_config([{"name": "modality_intensity", "windows": 5}])
    # A union's members named with the value given (the first member's "spacing.float: Input should be a valid
    # number" was all, for a list of two)
    for spacing in ([1, 1], [1, 2, 3, 4]):
        with pytest.raises(ConfigError, match=re.escape(f"step 1 (resample): spacing: expected a number or 3 numbers, "
                                                        f"got {spacing}")):  # fmt: skip
            Pipeline.from_config([{"name": "resample", "spacing": spacing}])
    with pytest.raises(ConfigError, match="unknown roi"):
        Pipeline.from_config([{"name": "mask_roi", "roi": "liver"}])
    with pytest.raises(ConfigError, match="mapping with a 'name'"):
        Pipeline.from_config([["window"]])
    # A resize to 200,000 x 200,000 (a hand-edited model.json) is refused when built, before any allocation.
    with pytest.raises(ConfigError, match=r"40,000,000,000 voxels, the limit is 67,108,864"):
        Pipeline.from_config([{"name": "resize", "size": [200000, 200000]}])
    # int64 voxel counts wrapped [2^40, 2^40] to 0 (under the limit) and raised OverflowError for 10^30: counted exactly.
    for step in ({"name": "resize", "size": [2**40, 2**40]}, {"name": "resize", "size": [10**30, 8]},
                 {"name": "crop_or_pad", "size": [2**32, 2**32, 1]}):
        with pytest.raises(ConfigError, match=r"voxels, the limit is 67,108,864"):
            Pipeline.from_config([step])
    # A number YAML read as text (1e9 without a dot) is refused when built, naming the parameter.
    with pytest.raises(ConfigError, match=r"step 1 \(unsharp\): radius_mm must be a number, got '1e9' \(YAML"):
        Pipeline.from_config([{"name": "unsharp", "radius_mm": "1e9"}])
    # Sizes that would allocate petabytes or a billion histogram bins: one line when the pipeline is built.
    with pytest.raises(ConfigError, match=r"^step 1 \(crop_or_pad\): size \[100000, 100000, 100000\] is "
                                          r"1,000,000,000,000,000 voxels, the limit is 67,108,864$"):  # fmt: skip
        Pipeline.from_config([{"name": "crop_or_pad", "size": [100000, 100000, 100000]}])
    with pytest.raises(ConfigError, match=r"^step 1 \(equalize\): nbins: Input should be less than or equal to 65536$"):
        Pipeline.from_config([{"name": "equalize", "nbins": 10**9}])
    # A resample to 1 micrometre is refused by the voxel limit before SimpleITK allocates anything.
    tiny = Pipeline.from_config([{"name": "resample", "spacing": 0.001}])
    with pytest.raises(InputError, match=r"resampling to 0.001 mm gives an image of .* exceeds the limit"):
        tiny(Volume(np.zeros((4, 8, 8), np.float32), spacing=(1.0, 1.0, 1.0)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: {name: window}\n")
    with pytest.raises(ConfigError, match="list of steps"):
        Pipeline.from_yaml(bad)
    with pytest.raises(InputError, match="not found"):
        Pipeline.from_yaml(tmp_path / "missing.yaml")
    # Errors in a YAML file name the file, so the CLI prints "error: <file>: step N ...".
    typo = tmp_path / "typo.yaml"
    typo.write_text("steps:\n  - {name: window, preset: lungs}\n")
    with pytest.raises(ConfigError) as err:
        Pipeline.from_yaml(typo)
    assert err.value.path == typo and "step 1 (window): unknown window preset 'lungs'" in str(err.value)


def test_a_filter_simpleitk_refuses_is_one_line_naming_the_step():
    """pydicom's sagittal one-slice CT (dicomdirtests CT2N) made canonical is one voxel thick along x: ITK's
    recursive Gaussian refuses it with a C++ trace, now an InputError naming the step, no filter address."""
    thin = Volume(np.random.default_rng(0).normal(0, 1, (16, 16, 1)).astype(np.float32), spacing=(650.0, 0.6, 0.5))
    with pytest.raises(InputError) as err:
        Pipeline.from_config([{"name": "denoise", "method": "gaussian", "sigma_mm": 1.0}])(thin)
    assert str(err.value) == "denoise: image too small: fewer than 4 pixels along x (this filter needs at least 4)"
    assert "0x" not in str(err.value)


def test_cli_preprocess_and_segment(lung1_ct, tmp_path):
    from medanomaly.cli.app import app

    ct_path = write(_small_ct(lung1_ct), tmp_path / "ct.nrrd")
    runner = CliRunner()
    res = runner.invoke(app, ["preprocess", str(ct_path), str(tmp_path / "out.nii.gz"), "--config", str(CONFIG)])
    assert res.exit_code == 0, res.output
    assert read(tmp_path / "out.nii.gz").spacing == pytest.approx((1.0, 1.0, 2.5))
    log = json.loads((tmp_path / "out.steps.json").read_text())
    assert [s["name"] for s in log["steps"]][0] == "mask_roi"
    res = runner.invoke(app, ["segment", str(ct_path), str(tmp_path / "lungs.nii.gz"), "--roi", "lung"])
    assert res.exit_code == 0, res.output
    assert "right" in res.output and "mL" in res.output
    lungs = read(tmp_path / "lungs.nii.gz")
    assert set(np.unique(lungs.array)) == {0, 1, 2}


def test_cli_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from medanomaly.cli.app import main

    mr = Volume(np.random.default_rng(0).uniform(0, 500, (2, 16, 16)).astype(np.float32), meta={"modality": "MR"})
    path = write(mr, tmp_path / "mr.nrrd")
    steps = tmp_path / "steps.yaml"
    steps.write_text("- {name: window, preset: lung}\n")
    # The console entry point in a fresh process once: one line on stderr, exit code 2.
    exe = [sys.executable, "-c", "from medanomaly.cli.app import main; main()"]
    res = subprocess.run([*exe, "preprocess", str(path), str(tmp_path / "o.nii.gz"), "--config", str(steps)],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "needs a CT in HU" in res.stderr
    assert res.stderr.startswith(f"error: {path}: ")  # the input image is named

    def run(*args: str) -> str:
        """The same entry point in this process (fast); returns stderr after checking exit code 2."""
        monkeypatch.setattr(sys, "argv", ["medanomaly", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1, err
        return err

    assert run("segment", str(path), str(tmp_path / "m.nii.gz"), "--roi", "lung").startswith(
        f"error: {path}: lung_mask needs a CT"
    )
    # A bad output name fails before any work, naming the output.
    err = run("preprocess", str(path), str(tmp_path / "o.xyz"), "--config", str(steps))
    assert err.startswith(f"error: {tmp_path / 'o.xyz'}: cannot write '.xyz'")
    steps.write_text("- {name: windw}\n")
    err = run("preprocess", str(path), str(tmp_path / "o.nii.gz"), "--config", str(steps))
    assert err.startswith(f"error: {steps}: step 1: unknown transform 'windw'")
    assert "unknown --roi" in run("segment", str(path), str(tmp_path / "m.nii.gz"), "--roi", "kidney")
    # A PNG holds one slice: a 2-slice volume is refused before the work (the CLI has no slice option).
    err = run("segment", str(path), str(tmp_path / "m.png"), "--roi", "body")
    assert err.startswith(f"error: {tmp_path / 'm.png'}: a picture holds one slice but mr.nrrd has 2")


def test_cli_segment_2d_reports_area(tmp_path):
    """A single-slice image (real ITK T1 slice, PNG) gets its ROI size as an area in cm2, not mL."""
    from medanomaly.cli.app import app
    from medanomaly.data.sources import real_data

    res = CliRunner().invoke(app, ["segment", str(real_data("itk/BrainT1Slice.png")), str(tmp_path / "m.png"),
                                   "--roi", "body"])  # fmt: skip
    assert res.exit_code == 0, res.output
    mask = read(tmp_path / "m.png")
    area = float((mask.array > 0).sum()) / 100.0  # 1 x 1 mm pixels
    assert f"body {round(area, 1)} cm2" in res.output and " mL" not in res.output


def test_preprocess_cli_out_option_and_never_overwrites_its_input(tmp_path):
    """One output convention: --out/-o (positional OUT still accepted); OUT == IN is refused."""
    from typer.testing import CliRunner

    from medanomaly.cli.app import app
    from medanomaly.io import write
    from medanomaly.types import Volume

    image = write(Volume(np.full((1, 16, 16), 100, np.int16), meta={"modality": "MR"}), tmp_path / "x.nii.gz")
    steps = tmp_path / "steps.yaml"
    steps.write_text("- {name: minmax}\n")
    before = image.read_bytes()
    res = CliRunner().invoke(app, ["preprocess", str(image), "-o", str(image), "-c", str(steps)])
    assert res.exit_code != 0 and "overwrite the input" in str(res.exception)
    assert image.read_bytes() == before
    res = CliRunner().invoke(app, ["preprocess", str(image), "-o", str(tmp_path / "y.nii.gz"), "-c", str(steps)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "y.nii.gz").is_file()


def test_a_pipeline_of_more_than_100_steps_is_refused_when_built():
    """20,000 denoise steps (a 400 KB YAML file, within the YAML limits) would have run for about a day on one CT."""
    from medanomaly.preprocess.pipeline import MAX_STEPS

    assert len(Pipeline.from_config([{"name": "zscore"}] * MAX_STEPS).steps) == MAX_STEPS
    with pytest.raises(ConfigError, match="pipeline has 20,000 steps, more than 100"):
        Pipeline.from_config({"steps": [{"name": "denoise"}] * 20_000})


@pytest.mark.parametrize("step, words", [
    ({"name": "clahe", "kernel_size": 0}, "kernel_size: Input should be greater than or equal to 2"),
    ({"name": "clahe", "clip_limit": float("nan")}, "clip_limit: Input should be a finite number"),
    ({"name": "cast", "dtype": "float16"}, "dtype 'float16' is not one of uint8, int8"),
    ({"name": "cast", "dtype": "complex128"}, "dtype 'complex128' is not one of"),
    ({"name": "equalize", "roi": "nope"}, "unknown roi 'nope'; valid: body, brain, breast, lung"),
    ({"name": "zscore", "roi": "nope"}, "unknown roi 'nope'"),
    ({"name": "percentile_clip", "lower": 200}, "lower: Input should be less than or equal to 100"),
    ({"name": "percentile_unit", "low_pct": 90, "high_pct": 10}, "need low_pct < high_pct, got 90.0, 10.0"),
    ({"name": "random_gamma", "seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"name": "unsharp", "radius_mm": 1e9}, "radius_mm: Input should be less than or equal to 100"),
    ({"name": "unsharp", "amount": float("nan")}, "amount: Input should be a finite number"),
    ({"name": "denoise", "sigma_mm": float("nan")}, "denoise gaussian: sigma_mm is nan: give a finite number"),
    ({"name": "crop_or_pad", "pad_value": float("nan")}, "pad_value: Input should be a finite number"),
    ({"name": "resample", "default": float("nan")}, "default: Input should be a finite number"),
    ({"name": "hu_clip", "low": 500, "high": -500}, "need low < high, got 500.0, -500.0"),
])  # fmt: skip
def test_a_step_checks_its_parameters_when_the_pipeline_is_built(step, words):
    """Each was a traceback mid-pipeline (a CLAHE kernel of 0 divided by zero, a percentile of 200, a 10^9 mm unsharp
    kernel of 76 GiB, an unknown ROI a KeyError, a seed of -1, float16 that SimpleITK cannot write) or ran silently
    (a NaN clip limit, sigma, amount or fill value; a complex cast)."""
    with pytest.raises(ConfigError) as error:
        Pipeline.from_config([step])
    assert str(error.value).startswith(f"step 1 ({step['name']}): {words}") and "\n" not in str(error.value)


def test_cli_segment_of_a_dicom_series_written_as_dicom_measures_on_it(tmp_path):
    """``segment CT/ --out MASK/`` then ``quantify CT/ --mask MASK/``: the mask series keeps the CT's Frame of
    Reference (a mask in another frame is refused as drawn on another patient's coordinates)."""
    from medanomaly.cli.app import app
    from medanomaly.data.sources import real_data

    ct = _small_ct(read(real_data("pyradiomics/lung1_image.nrrd")))
    write(ct.with_meta(modality="CT"), tmp_path / "ct/")
    runner = CliRunner()
    res = runner.invoke(app, ["segment", str(tmp_path / "ct"), "--out", f"{tmp_path / 'mask'}/", "--roi", "lung"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["quantify", str(tmp_path / "ct"), "--mask", str(tmp_path / "mask")])
    assert res.exit_code == 0 and res.output.startswith("label 1: "), res.output
