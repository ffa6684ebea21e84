"""End to end: `medanomaly register`, `fusion-benchmark`, `train` + `evaluate`, manifest data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.data.sources import real_data
from tests.integration.conftest import TINY_FUSION, run_main

runner = CliRunner()

TINY = TINY_FUSION


def _config(tmp_path: Path, **changes) -> Path:
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_fusion_cli_register_recovers_shift(tmp_path):
    out = tmp_path / "pd_in_t1.nrrd"
    result = runner.invoke(
        app,
        ["register", str(real_data("itk/BrainT1SliceBorder20.png")),
         str(real_data("itk/BrainProtonDensitySliceShifted13x17y.png")), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert np.allclose(summary["translation_mm"], [13, 17], atol=1.0)
    assert summary["mutual_information"] > summary["mutual_information_before"]
    assert out.is_file() and (tmp_path / "pd_in_t1.tfm").is_file()


def test_fusion_cli_register_names_the_bad_file(tmp_path):
    """A NaN image or a 2D image against a 3D one, through the console entry point: one line naming that file,
    exit 2, nothing written."""
    import subprocess
    import sys

    import nibabel as nib

    rng = np.random.default_rng(0)
    good, bad, flat = tmp_path / "good.nii.gz", tmp_path / "nan.nii.gz", tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=(32, 32, 8)).astype(np.float32), np.eye(4)), good)
    nib.save(nib.Nifti1Image(np.full((32, 32, 8), np.nan, np.float32), np.eye(4)), bad)
    nib.save(nib.Nifti1Image(rng.normal(size=(32, 32)).astype(np.float32), np.eye(4)), flat)
    for fixed, moving, named, reason in ((good, bad, "nan.nii.gz", "moving image has non-finite voxels"),
                                         (bad, good, "nan.nii.gz", "fixed image has non-finite voxels"),
                                         (good, flat, "slice.nii.gz", "cannot register a 2D moving image")):
        out = tmp_path / "out.nii.gz"
        result = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "register", str(fixed), str(moving),
                                 "--out", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and reason in lines[0], result.stderr
        assert not out.exists()


def test_fusion_cli_register_within_a_time_budget(tmp_path):
    """ITK's L-BFGS-B ignores StopRegistration: a B-spline registration of two brains ran over 6 minutes with no way
    to stop it. --max-minutes runs it in a child process and stops that at the deadline: one line, exit 2, nothing
    written, no process left; within the budget the result is the in-process one, and a bad image in the child is
    the same one line naming it."""
    import os
    import subprocess
    import sys

    t1, pd = real_data("itk/BrainT1SliceBorder20.png"), real_data("itk/BrainProtonDensitySliceShifted13x17y.png")
    command = [sys.executable, "-m", "medanomaly.cli.app", "register"]
    brains = [str(real_data(f"pyradiomics/brain{i}_image.nrrd")) for i in (1, 2)]
    slow = subprocess.run([*command, *brains, "--out", str(tmp_path / "slow.nii.gz"), "--stages",
                           "rigid,affine,bspline", "--max-minutes", "0.1"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert slow.returncode == 2 and slow.stderr.strip().splitlines()[-1].endswith(
        "brain2_image.nrrd: registration did not finish within 0.1 minute(s) and was stopped; nothing was written "
        "(give fewer stages, or more --max-minutes)"), slow.stderr
    assert not list(tmp_path.iterdir())
    # register runs on one ITK thread whatever ITK's default (4 here), so the two runs give the same result
    four = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "4"}
    within = subprocess.run([*command, str(t1), str(pd), "--out", str(tmp_path / "a.nrrd"), "--max-minutes", "5"],
                            capture_output=True, text=True, timeout=300, env=four)  # fmt: skip
    plain = subprocess.run([*command, str(t1), str(pd), "--out", str(tmp_path / "b.nrrd")], capture_output=True,
                           text=True, timeout=300, env=four)  # fmt: skip
    assert within.returncode == 0 and plain.returncode == 0, within.stderr
    summary, reference = json.loads(within.stdout), json.loads(plain.stdout)
    assert summary.pop("image").endswith("a.nrrd") and summary.pop("transform").endswith("a.tfm")
    assert summary == {k: v for k, v in reference.items() if k not in ("image", "transform")}
    (tmp_path / "empty.png").write_bytes(b"")
    bad = subprocess.run([*command, str(t1), str(tmp_path / "empty.png"), "--out", str(tmp_path / "c.nrrd"),
                          "--max-minutes", "5"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty.png'}: empty file"]
    faster = subprocess.run([*command, str(t1), str(pd), "--out", str(tmp_path / "d.nrrd"), "--threads", "2",
                             "--max-minutes", "5"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert faster.returncode == 0 and json.loads(faster.stdout)["stages"] == reference["stages"], faster.stderr
    none = subprocess.run([*command, str(t1), str(pd), "--out", str(tmp_path / "e.nrrd"), "--threads", "0"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert none.returncode == 2 and "--threads" in none.stderr and not (tmp_path / "e.nrrd").exists()


def test_fusion_cli_benchmark_table(tmp_path):
    result = runner.invoke(app, ["fusion-benchmark", str(_config(tmp_path)), "--out", str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output and "| single T1 | T1 |" in result.output
    assert "without PD" in result.output and "verdict:" in result.output
    saved = json.loads((tmp_path / "bench" / "fusion_benchmark.json").read_text())
    assert saved["synthetic"] is True and [r["label"] for r in saved["rows"]] == ["single T1", "hybrid"]
    hybrid = saved["rows"][1]["test"]
    assert {"auc", "auc_without_T1", "auc_without_PD", "auc_T1_visible_lesions"} <= set(hybrid)
    assert hybrid["auc"]["ci_low"] <= hybrid["auc"]["value"] <= hybrid["auc"]["ci_high"]


def test_fusion_cli_train_evaluate(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(_config(tmp_path)), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "weights.safetensors").is_file() and (run / "train.json").is_file()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())  # the one classification schema + fusion keys
    assert metrics["synthetic"] is True and metrics["n_samples"] == 48 and "roc_auc" in metrics["macro"]
    fusion = metrics["fusion"]
    assert 0.0 <= fusion["auc"]["value"] <= 1.0 and "auc_without_T1" in fusion
    assert (run / "report.html").is_file() and "Fusion" in (run / "report.html").read_text()

    # predict and explain through the engine, one file per modality (a missing one is flagged)
    t1, pd = real_data("itk/BrainT1Slice.png"), real_data("itk/BrainProtonDensitySlice.png")
    result = runner.invoke(app, ["predict", str(run), f"T1={t1}", f"PD={pd}", "--json"])
    assert result.exit_code == 0, result.output
    pred = json.loads(result.output.strip().splitlines()[-1])
    assert set(pred["probabilities"]) == {"normal", "abnormal"} and not pred["flags"][:1] == ["missing_modality:T1"]
    result = runner.invoke(app, ["predict", str(run), f"T1={t1}", "PD=-", "--json"])
    assert result.exit_code == 0 and "missing_modality:PD" in result.output, result.output
    result = runner.invoke(app, ["explain", str(run), f"T1={t1},PD={pd}", "-o", str(tmp_path / "expl")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "expl" / "explain.json").read_text())
    assert report["run_kind"] == "fusion" and any(f.endswith(".png") for f in report["files"])

    # a CT behind the T1 key (pydicom's test CT), or images on two grids: one error line naming the files, exit 2,
    # for predict (it said "skipped: t1_path holds ..." naming no file) and explain (it ran on the CT unchecked)
    from pydicom.data import get_testdata_file

    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    for verb, inputs, reason in (("predict", [f"T1={ct}", f"PD={pd}"], "T1 holds a CT image, expected MR"),
                                 ("explain", [f"T1={ct},PD={pd}"], "T1 holds a CT image, expected MR"),
                                 ("explain", [f"T1={mr},PD={pd}"], "grids differ: T1 64x64x1 vox")):  # fmt: skip
        code, _, err = run_main(monkeypatch, capsys, verb, str(run), *inputs, "-o", str(tmp_path / f"bad-{verb}"))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: T1={ct if 'CT' in reason else mr}, PD={pd}: {reason}"), lines
        assert not (tmp_path / f"bad-{verb}").exists() or not any((tmp_path / f"bad-{verb}").iterdir())

    # an edited or foreign model.json the network cannot be built or run with: one line naming it, at load (windows of
    # None, a 3D size for the 2D network, one class name for two outputs and no input were tracebacks)
    import shutil

    for case, edit, reason in (
        ("windows", lambda d: d["extra"].update(windows=None), "windows must map modality names to finite"),
        ("size3d", lambda d: d["input"].update(image_size=[32, 32, 32]), "image_size [32, 32, 32] is not 2D"),
        ("classes", lambda d: d.update(class_names=["a"]), "1 class names ['a'] for a network of 2 outputs"),
        ("noinput", lambda d: d.update(input={}), "needs modalities, spatial_dims and image_size"),
    ):
        bad = shutil.copytree(run, tmp_path / f"edited-{case}")
        doc = json.loads((bad / "model.json").read_text())
        edit(doc)
        (bad / "model.json").write_text(json.dumps(doc))
        code, _, err = run_main(monkeypatch, capsys, "predict", str(bad), f"T1={t1}", f"PD={pd}")
        assert code == 2 and err.startswith(f"error: {bad / 'model.json'}: ") and reason in err, (case, err)
        assert err.count("\n") == 1, (case, err)


def test_fusion_cli_manifest_training_with_missing_file(tmp_path):
    from medanomaly.fusion.simulate import simulate_pairs, write_manifest
    from medanomaly.fusion.task import build_splits

    data = simulate_pairs(40, "train", seed=5, size=32, strong_contrast=(0.8, 1.2))
    manifest = write_manifest(data, tmp_path / "sim")
    (tmp_path / "sim" / "sim0003_pd.nrrd").unlink()  # one modality of one patient is missing
    config = _config(
        tmp_path, data={"source": "manifest", "manifest": str(manifest), "size": [32, 32], "val": 0.2, "test": 0.2}
    )
    from medanomaly.config import load_config

    splits = build_splits(load_config(config))
    total = sum(len(y) for _, y, _ in splits.arrays.values())
    assert total == 40 and splits.synthetic is False  # manifest data: the loader cannot tell
    presence = np.concatenate([p for _, _, p in splits.arrays.values()])
    assert presence.sum() == 79  # 40 x 2 minus the missing PD
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output


def test_fusion_cli_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output folder, runs/<name>-benchmark, is made here
    result = runner.invoke(app, ["fusion-benchmark", str(_config(tmp_path, data={"source": "manifest"}))])
    assert result.exit_code != 0
    assert "data.manifest is not set" in str(result.exception)
    assert not (tmp_path / "runs").exists()  # the empty folder made for the outputs is gone (it was left behind)
    config = _config(tmp_path, data={"source": "manifest", "manifest": str(tmp_path / "none.csv")})
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "r")])
    assert "manifest not found" in str(result.exception)


@pytest.mark.parametrize("option, words", [
    (["--stages", "rigid,bogus"], "error: stages must start with 'rigid'"),
    (["--metric", "bogus"], "error: metric must be one of ('mattes', 'mean_squares'), got 'bogus'"),
])  # fmt: skip
def test_fusion_cli_register_option_errors_name_no_image(tmp_path, monkeypatch, capsys, option, words):
    """An unknown stage or metric was reported as the moving image's fault ('brain1_image.nrrd: stages must ...'),
    after both images had been read."""
    import sys

    from medanomaly.cli.app import main

    missing = str(tmp_path / "never_read.nrrd")
    monkeypatch.setattr(sys, "argv", ["medanomaly", "register", missing, missing, "--out", str(tmp_path / "o.nrrd"),
                                      *option])  # fmt: skip
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2 and capsys.readouterr().err.strip().startswith(words)


def test_fusion_cli_register_checks_its_output_name_before_registering(tmp_path, monkeypatch, capsys):
    """An output register cannot write (an unknown extension, a name ITK cannot take) failed only after the
    registration had run (minutes for a bspline on two brains): now before either image is read."""
    import os
    import sys

    from medanomaly.cli.app import main

    missing = str(tmp_path / "never_read.nrrd")
    for out, words in ((tmp_path / "o.txt", "cannot write '.txt'"),
                       (tmp_path / os.fsdecode(b"o\xff.nrrd"), "file name is not UTF-8 text")):  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["medanomaly", "register", missing, missing, "--out", str(out)])
        with pytest.raises(SystemExit) as code:
            main()
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2 and words in err and "never_read" not in err, err


def test_fusion_takes_its_modalities_from_volumes_of_one_4d_file(tmp_path, monkeypatch, capsys):
    """The Medical Segmentation Decathlon keeps a case's contrasts as volumes of one 4D file: ``data.volumes`` names
    each modality's volume (both manifest columns name the same file), the run records it, and ``predict T1=F PD=F``
    reads the same volumes. A 4D file without it says which setting takes one."""
    import nibabel as nib

    from medanomaly.fusion.simulate import simulate_pairs, write_manifest
    from medanomaly.io import read

    data = simulate_pairs(40, "train", seed=5, size=32, strong_contrast=(0.8, 1.2))
    manifest = write_manifest(data, tmp_path / "sim")
    lines = ["patient_id,t1_path,pd_path,label"]
    for row in manifest.read_text().splitlines()[1:]:
        pid, t1, pd, label = row.split(",")
        stacked = np.stack([np.asarray(read(tmp_path / "sim" / f).array, np.float32)[0].T for f in (pd, t1)], -1)
        nib.save(nib.Nifti1Image(stacked[:, :, None, :], np.eye(4)), tmp_path / "sim" / f"{pid}.nii.gz")
        lines.append(f"{pid},{pid}.nii.gz,{pid}.nii.gz,{label}")  # volume 0: PD, volume 1: T1
    (tmp_path / "sim" / "four_d.csv").write_text("\n".join(lines) + "\n")
    base = {"source": "manifest", "manifest": str(tmp_path / "sim" / "four_d.csv"), "size": [32, 32], "val": 0.2,
            "test": 0.2}  # fmt: skip
    result = runner.invoke(app, ["train", str(_config(tmp_path, data=base)), "--out", str(tmp_path / "none")])
    assert result.exit_code != 0 and "set data.volumes.T1 to one of them" in str(result.exception)
    config = _config(tmp_path, data={**base, "volumes": {"T1": 1, "PD": 0}})
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "model.json").read_text())["extra"]["volumes"] == {"T1": 1, "PD": 0}
    case = tmp_path / "sim" / "sim0001.nii.gz"
    code, out, err = run_main(monkeypatch, capsys, "predict", str(tmp_path / "run"), f"T1={case}", f"PD={case}",
                              "--json")  # fmt: skip
    assert code == 0, err
    swapped = _config(tmp_path, data={**base, "volumes": {"T1": 0, "PD": 1, "CT": 2}})
    result = runner.invoke(app, ["train", str(swapped), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "data.volumes names ['CT'], not among data.modalities" in str(result.exception)


def test_a_run_trained_on_registered_pairs_registers_its_inputs_too(tmp_path, monkeypatch, capsys):
    """``data.alignment: register`` on a manifest whose PDs lie 4 mm off their T1s (another grid): the pairs were
    refused ("grids differ"), so a CT and an MR of two visits could not train a model. They are registered as they load,
    the run records it, and its predictions register their inputs unless asked otherwise."""
    from medanomaly.fusion.simulate import simulate_pairs, write_manifest
    from medanomaly.io import read, write
    from medanomaly.types import Volume

    data = simulate_pairs(24, "train", seed=5, size=48, strong_contrast=(0.8, 1.2))
    manifest = write_manifest(data, tmp_path / "sim")
    for pd in (tmp_path / "sim").glob("*_pd.nrrd"):  # each PD moved 4 mm in x: another grid
        volume = read(pd)
        write(Volume(volume.array, volume.spacing, (4.0, 0.0, 0.0), meta={"modality": "MR"}), pd)
    changes = {"data": {"source": "manifest", "manifest": str(manifest), "size": [48, 48], "val": 0.25, "test": 0.25}}
    code, _, err = run_main(monkeypatch, capsys, "train", str(_config(tmp_path, **changes)), "--out", str(tmp_path / "a"))
    assert code == 2 and "only 0 usable patients" in err and "grids differ" in err, err
    changes["data"]["alignment"] = "register"
    code, _, err = run_main(monkeypatch, capsys, "train", str(_config(tmp_path, **changes)), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "model.json").read_text())["extra"]["alignment"] == "register"
    assert json.loads((tmp_path / "b" / "train.json").read_text())["skipped"] == []  # every pair registered
    pair = [f"T1={tmp_path / 'sim' / 'sim0000_t1.nrrd'}", f"PD={tmp_path / 'sim' / 'sim0000_pd.nrrd'}"]
    code, out, err = run_main(monkeypatch, capsys, "predict", str(tmp_path / "b"), *pair, "--json")
    flags = json.loads(out.strip().splitlines()[-1])["flags"]
    assert code == 0 and any(f.startswith("registered:PD rigid onto T1") for f in flags), (out, err)
    code, _, err = run_main(monkeypatch, capsys, "predict", str(tmp_path / "b"), *pair, "--resample-to-first")
    assert code == 2 and "another frame of reference" in err, err  # asked otherwise: as asked
    from medanomaly.io.dicom_writer import write_dicom_series

    study = "1.2.826.0.1.3680043.8.498.61"
    for name, origin in (("T1", 0.0), ("PD", 4.0)):  # an archive's study: the PD of another visit, 4 mm off
        volume = read(tmp_path / "sim" / f"sim0001_{name.lower()}.nrrd")
        write_dicom_series(Volume(volume.array, volume.spacing, (origin, 0.0, 0.0), meta={
            "modality": "MR", "frame_of_reference_uid": f"{study}.{name == 'PD'}"}), tmp_path / "arch" / name,
            study_uid=study, description=name)  # fmt: skip
    code, out, err = run_main(monkeypatch, capsys, "predict", str(tmp_path / "b"), str(tmp_path / "arch"), "--out",
                              str(tmp_path / "batch"), "--no-dicom")  # fmt: skip
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "batch" / "series").glob("*.json")
                 if json.loads(p.read_text())["status"] == "done"]  # fmt: skip
    assert code == 0 and any(f.startswith("registered:PD") for f in record["prediction"]["flags"]), (out, err)
    code, _, err = run_main(monkeypatch, capsys, "train", str(_config(tmp_path, **{"data": {"alignment": "register"}})),
                            "--out", str(tmp_path / "c"))  # fmt: skip
    assert code == 2 and "data.alignment aligns a manifest's images" in err, err


def test_register_takes_one_volume_of_a_4d_image_on_each_side(tmp_path):
    """A 4D image (an fMRI run, a multi-echo series) could not be registered at all (``4D image ...``, and register
    took no frame): --fixed-frame / --moving-frame take one volume of each, in the process and within --max-minutes
    alike; without them the refusal says which options take one."""
    import nibabel as nib
    from PIL import Image

    pd = np.asarray(Image.open(real_data("itk/BrainProtonDensitySlice.png")).convert("L"), np.float32).T
    moved = np.zeros_like(pd)
    moved[13:, 17:] = pd[:-13, :-17]  # the anatomy 13 and 17 px (1 mm each) further along x and y
    four_d = tmp_path / "run.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([pd, moved], -1)[:, :, None, :], np.eye(4)), four_d)
    for budget in ([], ["--max-minutes", "5"]):
        out = tmp_path / f"moved_on_first{len(budget)}.nii.gz"
        result = runner.invoke(app, ["register", str(four_d), str(four_d), "--fixed-frame", "0", "--moving-frame", "1",
                                     "--out", str(out), *budget])  # fmt: skip
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output[result.output.index("{"):])
        assert np.allclose(np.abs(summary["translation_mm"]), [13, 17], atol=1.0) and out.is_file()
    result = runner.invoke(app, ["register", str(four_d), str(four_d), "--out", str(tmp_path / "x.nii.gz")])
    assert result.exit_code != 0 and "register with --fixed-frame / --moving-frame" in str(result.exception)
