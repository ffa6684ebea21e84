"""A fusion model over an archive: each study's T1 and PD series (ITK's real brain slices written as DICOM MR series)
paired into one prediction, the prediction `predict RUN T1=... PD=...` makes, resumable, explained, in DICOM."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.deploy.batch import BatchOptions, run_batch
from tests.integration.conftest import run_main, train_tiny_fusion

STUDY = "1.2.826.0.1.3680043.8.498.{}"
FRAME = "1.2.826.0.1.3680043.8.498.100{}"


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory) -> Path:
    return train_tiny_fusion(tmp_path_factory.mktemp("batch-fusion"))


def _slice(name: str) -> np.ndarray:
    from PIL import Image

    path = real_data(f"itk/{'BrainT1Slice' if name == 'T1' else 'BrainProtonDensitySlice'}.png")
    return np.asarray(Image.open(path).convert("L"), np.float32)


def _series(root: Path, study: int, folder: str, name: str, description: str, frame: int | None = None,
            crop: int = 0, shift: float = 0.0, move: int = 0) -> Path:  # fmt: skip
    """``name``'s slice as a one-slice DICOM MR series of study ``study`` (a crop moves its origin, a ``shift`` (mm)
    too: another grid; ``move``: the anatomy moved by that many pixels down and to the right, the grid kept, as a
    patient who moved)."""
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    pixels = _slice(name)[crop:-crop, crop:-crop] if crop else _slice(name)
    if move:
        pixels = np.pad(pixels, ((move, 0), (move, 0)), constant_values=float(pixels.min()))[:-move, :-move]
    volume = Volume(pixels[None], spacing=(1.0, 1.0, 3.0), origin=(crop + shift, crop + shift, 0.0),
                    meta={"modality": "MR", "frame_of_reference_uid": FRAME.format(study if frame is None else frame)})
    write_dicom_series(volume, root / f"study{study}" / folder, study_uid=STUDY.format(study), description=description)
    return root / f"study{study}" / folder


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Study 1: T1 + PD; study 2: T1 alone; study 3: a T1 before and after contrast and a PD (which T1?)."""
    root = tmp_path_factory.mktemp("fusion-archive")
    _series(root, 1, "t1", "T1", "AX T1W SE")
    _series(root, 1, "pd", "PD", "pd_tse_tra")
    _series(root, 2, "t1", "T1", "t1_sag")
    for folder, description in (("pre", "T1 pre"), ("post", "T1 post")):
        _series(root, 3, folder, "T1", description)
    _series(root, 3, "pd", "PD", "PD")
    return root


def _rows(out: Path) -> dict[str, dict]:
    with (out / "results.csv").open() as fh:
        return {r["study_id"][-1] + ":" + r["status"]: r for r in csv.DictReader(fh)}


def _record(out: Path, series_id: str) -> dict:
    return json.loads((out / "series" / f"{series_id}.json").read_text())


def test_each_study_is_one_prediction_equal_to_the_cli_and_an_sr_in_its_study(fusion_run, archive, tmp_path,
                                                                               monkeypatch, capsys) -> None:  # fmt: skip
    import pydicom

    from medanomaly.deploy.dicom_call_sr import read_call_sr
    from medanomaly.deploy.dicom_out import dciodvfy

    out = tmp_path / "out"
    code, text, _ = run_main(monkeypatch, capsys, "predict", str(fusion_run), str(archive), "--out", str(out),
                             "--explain", "gradcam")  # fmt: skip
    assert code == 1 and "6 series: done 2, error 3, skipped 1" in text, text  # study 3 cannot tell its T1s apart
    rows = _rows(out)
    both, alone = _record(out, rows["1:done"]["series_id"]), _record(out, rows["2:done"]["series_id"])
    assert rows["1:skipped"]["reason"] == f"PD of the fusion set in the row of series {rows['1:done']['series_id']}"
    assert both["fusion"] == {"T1": rows["1:done"]["series_id"], "PD": rows["1:skipped"]["series_id"]}
    assert alone["fusion"]["PD"] is None and "missing_modality:PD" in alone["prediction"]["flags"]
    assert rows["3:error"]["reason"].startswith("2 series of its study match T1 (")
    code, text, _ = run_main(monkeypatch, capsys, "predict", str(fusion_run), f"T1={archive}/study1/t1",
                             f"PD={archive}/study1/pd", "--json")  # fmt: skip
    assert json.loads(text.strip().splitlines()[-1])["probabilities"] == pytest.approx(both["probabilities"], abs=1e-9)
    sr = out / both["dicom"]["sr"]
    assert dciodvfy(sr).errors == [] and read_call_sr(sr)["class"] == both["label"]
    assert pydicom.dcmread(sr).StudyInstanceUID == STUDY.format(1)
    evidence = {s.SeriesInstanceUID for study in pydicom.dcmread(sr).CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence}  # fmt: skip
    assert evidence == set(both["fusion"].values()), evidence  # the call was made from both series: both listed
    assert both["explanation"] == {"method": "gradcam", "class": both["label"]} and "parametric_map" in both["dicom"]
    assert "no PD" in alone["explanation"]["error"]  # a missing modality: the call stands, unexplained
    texts = (out / "results.csv").read_text() + "".join(p.read_text() for p in (out / "series").glob("*.json"))
    assert not any(d in texts for d in ("AX T1W", "pd_tse", "t1_sag", "T1 post")), "a description reached a result"


def test_a_rule_tells_two_series_apart_a_rerun_reuses_and_a_changed_set_runs_again(fusion_run, archive,
                                                                                  tmp_path) -> None:  # fmt: skip
    from medanomaly.engine import load_model

    model, out = load_model(fusion_run), tmp_path / "out"
    options = BatchOptions(dicom=False, modality_series=("T1=post|^t1_|AX T1W",))
    first = run_batch(model, archive, out, options, progress=False)
    assert first.counts == {"done": 3, "skipped": 3}, first.counts
    assert _record(out, _rows(out)["3:done"]["series_id"])["fusion"]["T1"].endswith(
        _series_uid(archive / "study3" / "post"))  # fmt: skip
    again = run_batch(model, archive, out, options, progress=False)
    assert again.processed == 0 and again.reused == 3
    _series(archive, 2, "pd", "PD", "PD axial")  # study 2 gets its PD: its set changed
    try:
        third = run_batch(model, archive, out, options, progress=False)
        assert third.processed == 1 and _record(out, _rows(out)["2:done"]["series_id"])["fusion"]["PD"] is not None
    finally:
        import shutil

        shutil.rmtree(archive / "study2" / "pd")


def _series_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_modalities_on_two_grids_need_resample_to_first_and_one_frame_of_reference(fusion_run, tmp_path) -> None:
    from medanomaly.engine import load_model
    from medanomaly.engine.verbs import predict_multimodal
    from medanomaly.io import read
    from medanomaly.preprocess.resample import resample_like

    root = tmp_path / "a"
    t1 = _series(root, 4, "t1", "T1", "T1")
    pd = _series(root, 4, "pd", "PD", "PD", crop=12, shift=0.5)  # smaller, half a voxel off: another grid, one frame
    _series(root, 5, "t1", "T1", "T1")
    _series(root, 5, "pd", "PD", "PD", crop=12, frame=6)  # another frame of reference
    model = load_model(fusion_run)
    run_batch(model, root, tmp_path / "plain", BatchOptions(dicom=False), progress=False)
    assert "PD is on another grid than T1" in _rows(tmp_path / "plain")["4:error"]["reason"]
    run_batch(model, root, tmp_path / "out", BatchOptions(dicom=False, resample_to_first=True), progress=False)
    rows = _rows(tmp_path / "out")
    assert "PD is in another frame of reference than T1" in rows["5:error"]["reason"]
    t1_volume = read(t1)
    expected = model.predict({"T1": t1_volume, "PD": resample_like(read(pd), t1_volume, "linear", dtype="float32")})
    got = _record(tmp_path / "out", rows["4:done"]["series_id"])["probabilities"]
    assert got == pytest.approx(dict(zip(expected.class_names, expected.scores, strict=True)), abs=1e-9)
    files = predict_multimodal(model, {"T1": t1, "PD": pd}, "resample")[1]  # the CLI's files, alike
    assert files.scores == pytest.approx(expected.scores, abs=1e-9)
    assert "grids differ" in predict_multimodal(model, {"T1": t1, "PD": pd})[1].reason


def test_modalities_of_two_frames_of_reference_are_registered_onto_the_first_when_asked(fusion_run, tmp_path,
                                                                                     monkeypatch, capsys) -> None:  # fmt: skip
    """A PD in another frame of reference, its anatomy 6 mm off the T1's: resampling by coordinates cannot align it
    (one line saying to register), --register-to-first does (the archive, the CLI's files and explain alike), and the
    transform found is in the call's flags."""
    import json
    import re

    from medanomaly.engine import load_model

    root = tmp_path / "a"
    t1 = _series(root, 6, "t1", "T1", "T1")
    pd = _series(root, 6, "pd", "PD", "PD", frame=7, move=6)
    model = load_model(fusion_run)
    run_batch(model, root, tmp_path / "plain", BatchOptions(dicom=False), progress=False)
    reason = _rows(tmp_path / "plain")["6:error"]["reason"]  # it was fused voxel by voxel: one grid, two places
    assert "PD is in another frame of reference than T1" in reason and "--register-to-first" in reason
    run_batch(model, root, tmp_path / "resampled", BatchOptions(dicom=False, resample_to_first=True), progress=False)
    reason = _rows(tmp_path / "resampled")["6:error"]["reason"]
    assert "PD is in another frame of reference than T1" in reason and "--register-to-first" in reason
    run_batch(model, root, tmp_path / "out", BatchOptions(register_to_first=True), progress=False)
    record = _record(tmp_path / "out", _rows(tmp_path / "out")["6:done"]["series_id"])
    reg = tmp_path / "out" / record["dicom"]["reg"]  # the transform as a DICOM Spatial Registration, in the T1's study
    from medanomaly.deploy.dicom_out import dciodvfy

    assert dciodvfy(reg).errors == [], dciodvfy(reg).errors
    import pydicom

    registration = pydicom.dcmread(reg).RegistrationSequence
    assert [item.FrameOfReferenceUID for item in registration] == [FRAME.format(6), FRAME.format(7)]
    matrix = np.asarray(registration[1].MatrixRegistrationSequence[0].MatrixSequence[0]
                        .FrameOfReferenceTransformationMatrix, float).reshape(4, 4)  # fmt: skip
    assert np.allclose(matrix @ [16.0, 20.0, 0.0, 1.0], [10.0, 14.0, 0.0, 1.0], atol=0.3)  # a PD point onto the T1
    (flag,) = [f for f in record["prediction"]["flags"] if f.startswith("registered:PD rigid onto T1")]
    translation = [float(v) for v in re.search(r"translation \(([^)]*)\) mm", flag).group(1).split(", ")]
    assert translation == pytest.approx([6.0, 6.0], abs=0.3)  # the T1's point lies 6 mm further down and right in the PD
    code, out, err = run_main(monkeypatch, capsys, "predict", str(fusion_run), f"T1={t1}", f"PD={pd}", "--json",
                              "--register-to-first")  # fmt: skip
    files = json.loads(out)
    assert code == 0 and files["probabilities"] == pytest.approx(record["probabilities"], abs=1e-9), err
    assert flag in files["flags"]
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fusion_run), f"T1={t1}", f"PD={pd}")
    assert code == 2 and "PD is in another frame of reference than T1" in err, err
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fusion_run), f"T1={t1}", f"PD={pd}",
                            "--register-to-first", "--resample-to-first")  # fmt: skip
    assert code == 2 and "give one" in err, err
    code, out, err = run_main(monkeypatch, capsys, "explain", str(fusion_run), f"T1={t1},PD={pd}", "-o",
                              str(tmp_path / "ex"), "--register-to-first")  # fmt: skip
    assert code == 0 and (tmp_path / "ex" / "explanation.nii.gz").is_file(), err
    assert json.loads(out)["registration"] == flag  # the explanation says it was made on the PD moved


def _of_patient(folder: Path, patient: str) -> Path:
    """``folder``'s series rewritten as patient ``patient``'s (our writer names every patient ANONYMOUS)."""
    import pydicom

    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientID = patient
        ds.save_as(path)
    return folder


def test_a_patient_s_studies_are_paired_with_pair_by_patient(fusion_run, tmp_path, monkeypatch, capsys) -> None:
    """A T1 study and a PD study of one patient (another visit: another frame of reference, the anatomy 6 mm off):
    each ran alone, its other modality missing; with --pair-by patient and --register-to-first they are one call, its SR
    in the T1's study listing the PD of the other study. A patient with two T1 studies is an error naming them; no
    PatientID reaches a result table or record."""
    import pydicom

    from medanomaly.deploy.dicom_out import dciodvfy

    root = tmp_path / "a"
    _of_patient(_series(root, 1, "t1", "T1", "T1"), "PAT-A")
    pd = _of_patient(_series(root, 2, "pd", "PD", "PD", frame=8, move=6), "PAT-A")
    _of_patient(_series(root, 3, "t1", "T1", "T1"), "PAT-B")
    for study, name in ((4, "T1"), (5, "T1"), (6, "PD")):
        _of_patient(_series(root, study, name.lower(), name, name), "PAT-C")
    code, text, err = run_main(monkeypatch, capsys, "predict", str(fusion_run), str(root), "--out", str(tmp_path / "s"))
    rows = _rows(tmp_path / "s")
    assert {"1:done", "2:done"} <= set(rows) and "missing_modality:T1" in _record(
        tmp_path / "s", rows["2:done"]["series_id"])["prediction"]["flags"], text  # fmt: skip
    out = tmp_path / "p"
    code, text, err = run_main(monkeypatch, capsys, "predict", str(fusion_run), str(root), "--out", str(out),
                               "--pair-by", "patient", "--register-to-first")  # fmt: skip
    assert code == 1 and "6 series: done 2, error 3, skipped 1" in text, text + err  # patient C: 3 errors
    rows = _rows(out)
    both = _record(out, rows["1:done"]["series_id"])
    assert both["fusion"] == {"T1": rows["1:done"]["series_id"], "PD": rows["2:skipped"]["series_id"]}
    assert rows["2:skipped"]["reason"] == f"PD of the fusion set in the row of series {rows['1:done']['series_id']}"
    assert rows["1:done"]["fusion"] == f"T1={rows['1:done']['series_id']}; PD={rows['2:skipped']['series_id']}"
    assert rows["3:done"]["fusion"].endswith("; PD=-") and rows["2:skipped"]["fusion"] == ""  # the table says it
    assert any(f.startswith("registered:PD rigid onto T1") for f in both["prediction"]["flags"])
    assert "missing_modality:PD" in _record(out, rows["3:done"]["series_id"])["prediction"]["flags"]
    assert rows["4:error"]["reason"].startswith("2 series of its patient match T1 (")
    sr = out / both["dicom"]["sr"]
    assert dciodvfy(sr).errors == [] and pydicom.dcmread(sr).StudyInstanceUID == STUDY.format(1)
    other = {s.SeriesInstanceUID for study in pydicom.dcmread(sr).PertinentOtherEvidenceSequence
             for s in study.ReferencedSeriesSequence}  # fmt: skip
    assert other == {_series_uid(pd)}  # the PD, of another study, is the call's evidence too
    assert pydicom.dcmread(sr).PatientID == "PAT-A"  # filed as the patient's (the DICOM outputs must name them)
    from tests.unit.deploy.test_dicom_call_sr import _algorithm_parameters

    registered = [f for f in both["prediction"]["flags"] if f.startswith("registered:")]
    assert registered and set(registered) <= set(_algorithm_parameters(sr))  # the SR says the PD was moved
    texts = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".csv", ".json"))
    assert not any(patient in texts for patient in ("PAT-A", "PAT-B", "PAT-C"))  # the results never do


def test_pairing_options_are_one_line_where_they_do_not_apply(fusion_run, tmp_path, monkeypatch, capsys) -> None:
    from tests.integration.conftest import lung_detector_run

    lung = lung_detector_run(tmp_path / "lung")
    (tmp_path / "empty").mkdir()
    for args, reason in (
        ((str(lung), str(tmp_path / "empty"), "--resample-to-first"), "takes one series at a time"),
        ((str(fusion_run), str(tmp_path / "empty"), "--modality-series", "T2=x"), "the model's modalities are T1, PD"),
        ((str(fusion_run), "T1=a.nii", "--modality-series", "T1=x"), "for files give MODALITY=path"),
        ((str(lung), "a.nii", "--resample-to-first"), "give MODALITY=path (or an archive)"),
        ((str(lung), str(tmp_path / "empty"), "--register-to-first"), "takes one series at a time"),
        ((str(lung), "a.nii", "--register-to-first"), "give MODALITY=path (or an archive)"),
        ((str(lung), str(tmp_path / "empty"), "--pair-by", "patient"), "takes one series at a time"),
        ((str(fusion_run), str(tmp_path / "empty"), "--pair-by", "visit"), "--pair-by must be study or patient"),
        ((str(fusion_run), "T1=a.nii", "--pair-by", "patient"), "--pair-by: for an archive"),
    ):
        code, _, err = run_main(monkeypatch, capsys, "predict", *args, "--out", str(tmp_path / "o"))
        assert code == 2 and reason in err and "Traceback" not in err, err
    import socket

    package = tmp_path / "package"
    assert run_main(monkeypatch, capsys, "export", str(fusion_run), "--out", str(package))[0] == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    for args, reason in (  # before the node listens, before the PACS is asked anything
        (("listen", str(fusion_run), "--allow-ae", "PACS", "--port", port, "--modality-series", "T2=x"),
         "the model's modalities are T1, PD"),
        (("pacs", str(fusion_run), "--url", "http://127.0.0.1:9/dicom-web", "--modality-series", "T1=("),
         "not a regular expression"),
        (("listen", str(package), "--allow-ae", "PACS", "--port", port, "--explain", "gradcam"),
         "cannot be explained: an exported package cannot explain"),
    ):  # fmt: skip
        code, _, err = run_main(monkeypatch, capsys, *args, "--out", str(tmp_path / "w"))
        assert code == 2 and reason in err and "listening" not in err and "cannot reach" not in err, err


def test_explain_takes_modalities_of_one_frame_on_two_grids_when_asked(fusion_run, tmp_path, monkeypatch, capsys):
    root = tmp_path / "a"
    inputs = f"T1={_series(root, 4, 't1', 'T1', 'T1')},PD={_series(root, 4, 'pd', 'PD', 'PD', crop=12, shift=0.5)}"
    code, _, err = run_main(monkeypatch, capsys, "explain", str(fusion_run), inputs, "-o", str(tmp_path / "plain"))
    assert code == 2 and "grids differ" in err, err
    code, out, err = run_main(monkeypatch, capsys, "explain", str(fusion_run), inputs, "-o", str(tmp_path / "ex"),
                              "--resample-to-first")  # fmt: skip
    assert code == 0 and (tmp_path / "ex" / "explanation.nii.gz").is_file(), err


@pytest.mark.ray
@pytest.mark.slow
def test_on_ray_each_set_is_run_and_explained_as_on_one_machine(fusion_run, archive, tmp_path) -> None:
    """Ray workers get the sets with the batch's context: the same rows, sets, calls and explanation maps (--explain
    on Ray had not been run by any test)."""
    import pydicom

    from medanomaly.engine import load_model

    model = load_model(fusion_run)
    options = BatchOptions(modality_series=("T1=post|^t1_|AX T1W",), explain="gradcam")
    local = run_batch(model, archive, tmp_path / "local", options, progress=False)
    on_ray = run_batch(model, archive, tmp_path / "ray", options, progress=False, engine="ray", workers=2)
    assert local.counts == on_ray.counts == {"done": 3, "skipped": 3}
    records = {}
    for where in ("local", "ray"):
        records[where] = {p.name: json.loads(p.read_text()) for p in (tmp_path / where / "series").glob("*.json")}
    assert records["local"].keys() == records["ray"].keys()
    assert sum("parametric_map" in r.get("dicom", {}) for r in records["ray"].values()) == 2  # the two whole sets
    for name, a in records["local"].items():
        b = records["ray"][name]
        assert {k: a.get(k) for k in ("status", "fusion", "prediction", "explanation")} == {
            k: b.get(k) for k in ("status", "fusion", "prediction", "explanation")}, name  # fmt: skip
        if "parametric_map" in a.get("dicom", {}):
            maps = [pydicom.dcmread(tmp_path / w / r["dicom"]["parametric_map"]) for w, r in (("local", a), ("ray", b))]
            assert np.array_equal(maps[0].pixel_array, maps[1].pixel_array), name


def test_a_file_the_reader_skips_in_a_partner_series_is_named_in_problems_csv(fusion_run, tmp_path) -> None:
    """A copy of an instance in the PD series is skipped by the reader, which says so "(named in problems.csv)"; the
    batch listed only the row's own series' skipped files there, so the PD's copy was in no file."""
    import shutil

    from medanomaly.engine import load_model
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    root = tmp_path / "a"
    frame = {"modality": "MR", "frame_of_reference_uid": FRAME.format(7)}
    for name, description in (("T1", "T1"), ("PD", "PD")):
        volume = Volume(np.stack([_slice(name)] * 4), spacing=(1.0, 1.0, 3.0), meta=frame)  # a model takes 4+
        write_dicom_series(volume, root / name.lower(), study_uid=STUDY.format(7), description=description)
    shutil.copy(root / "pd" / "slice_0001.dcm", root / "pd" / "copy_of_slice_1.dcm")
    out = tmp_path / "out"
    summary = run_batch(load_model(fusion_run), root, out, BatchOptions(dicom=False), progress=False)
    assert summary.counts == {"done": 1, "skipped": 1}, summary.counts
    problems = (out / "problems.csv").read_text()
    assert "pd/copy_of_slice_1.dcm" in problems and "pd/slice_0001.dcm" in problems, problems


def test_a_partner_series_that_cannot_be_read_has_its_own_files_named(fusion_run, tmp_path) -> None:
    """A PD with a slice missing: problems.csv named the T1's files ("gap between t1/slice_0001.dcm and
    t1/slice_0002.dcm"), the reader's link names read as the row's own series'; it names the PD and its files."""
    from medanomaly.engine import load_model
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    rng = np.random.default_rng(0)
    meta = {"modality": "MR", "frame_of_reference_uid": FRAME.format(9)}
    for name in ("T1", "PD"):
        volume = Volume(rng.normal(100, 10, (5, 64, 64)).astype(np.float32), spacing=(1.0, 1.0, 3.0), meta=meta)
        files = write_dicom_series(volume, tmp_path / "a" / name.lower(), study_uid=STUDY.format(9), description=name)
    files[2].unlink()  # the PD's third slice
    out = tmp_path / "out"
    run_batch(load_model(fusion_run), tmp_path / "a", out, BatchOptions(dicom=False), progress=False)
    rows = _rows(out)
    assert rows["9:error"]["reason"] == ("PD: inconsistent slice spacing: gap of 6 mm between file 2 of the PD series "
                                         "and file 3 of the PD series, expected 3 mm (missing or extra slice?) (files "
                                         "named in problems.csv)")  # fmt: skip
    with (out / "problems.csv").open() as fh:
        (problem,) = list(csv.DictReader(fh))
    assert problem["where"] == rows["9:skipped"]["series_id"]  # the PD's id, not the row's
    assert "between pd/slice_0001.dcm and pd/slice_0003.dcm" in problem["reason"], problem
