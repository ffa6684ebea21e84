"""The batch driver and CLI: refusals, untouched input, atomic writes, resume, keys, audit, lookup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.privacy import deid as deid_mod
from medanomaly.privacy.deid import DeidConfig, deidentify_folder
from medanomaly.privacy.pseudonym import KEY_ENV, file_id, load_key, read_lookup, reidentify

PATIENT_DIR = "DOE_JANE_19510829"  # input paths often name the patient


@pytest.fixture()
def folder(tmp_path, charset):
    """A small input folder: 2 CT files, 2 charset images, a DICOM without pixels, a zip, a text file."""
    src = tmp_path / "in"
    sub = src / PATIENT_DIR
    sub.mkdir(parents=True)
    shutil.copy(real_data("pydicom/CT_small.dcm"), sub / "ct1.dcm")
    shutil.copy(real_data("pydicom/MR_small.dcm"), sub / "mr1.dcm")
    shutil.copy(charset("chrFren.dcm"), src / "fren.dcm")
    shutil.copy(charset("chrRuss.dcm"), src / "russ.dcm")
    shutil.copy(charset("chrJapMulti.dcm"), src / "nopixels.dcm")
    (src / "notes.txt").write_text("Jane Doe called on 08/29/1951\n")
    shutil.copy(real_data("deid/ultrasounds") / "RGB_CINE.zip", src / "cine.zip")
    return src


def test_bad_files_refused_with_reasons_and_input_untouched(folder, tmp_path, key, digest):
    before = digest(folder)
    out = tmp_path / "out"
    summary = deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert digest(folder) == before
    assert (summary.processed, summary.refused) == (4, 3)
    audit = json.loads(summary.audit_path.read_text())
    assert audit["files"]["refused_by_reason"] == {"no pixel data": 1, "not a readable DICOM file": 2}
    assert len(list(out.rglob("*.dcm"))) == 4
    text = summary.audit_path.read_text()
    for phi in (PATIENT_DIR, "DOE", "19510829", "ct1.dcm", "Buc", "CompressedSamples^CT1", key.decode()):
        assert phi not in text
    assert audit["actions_per_attribute"]["PatientName"]["P"] == 4


def test_truncated_pixel_data_refused(folder, tmp_path, key):
    data = real_data("pydicom/CT_small.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) - 5000])
    summary = deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never"))
    audit = json.loads(summary.audit_path.read_text())
    assert audit["files"]["refused_by_reason"] == {
        "no pixel data": 1, "not a readable DICOM file": 2, "pixel data cannot be decoded": 1,
    }  # fmt: skip
    assert summary.processed == 4


def test_sequences_nested_too_deep_refused_with_their_own_reason(folder, tmp_path, key):
    """A CT whose ContentSequence nests 70 levels (a crafted file) was refused as 'de-identification failed'."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    inner = Dataset()
    inner.CodeMeaning = "leaf"
    for _ in range(70):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = Sequence([inner])
    ds.save_as(folder / "deep.dcm")
    summary = deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never"))
    audit = json.loads(summary.audit_path.read_text())
    assert audit["files"]["refused_by_reason"]["sequences nested deeper than 64 levels"] == 1
    assert summary.processed == 4


def test_huge_files_refused(folder, tmp_path, key):
    summary = deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never", max_file_mb=0.01))
    audit = json.loads(summary.audit_path.read_text())
    assert audit["files"]["refused_by_reason"]["file larger than the size limit"] >= 2


def test_output_inside_input_is_rejected(folder, key):
    with pytest.raises(InputError):
        deidentify_folder(folder, folder / "out", key)


def test_interrupted_write_leaves_no_partial_file_and_rerun_resumes(folder, tmp_path, key, monkeypatch):
    out = tmp_path / "out"
    real_stage = deid_mod.stage
    calls = {"n": 0}

    def flaky(ds, dest, fid):
        calls["n"] += 1
        if calls["n"] == 3:  # die half-way through the third file: a partial temp file is left
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.with_name(f".{dest.name}.{fid}.999999999.tmp").write_bytes(b"DICM partial")
            raise KeyboardInterrupt
        return real_stage(ds, dest, fid)

    monkeypatch.setattr(deid_mod, "stage", flaky)
    with pytest.raises(KeyboardInterrupt):
        deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert len(list(out.rglob("*.dcm"))) == 2  # only complete files carry the final name
    assert json.loads(next((out / ".medanomaly").glob("audit-*.json")).read_text())["status"] == "interrupted"
    monkeypatch.setattr(deid_mod, "stage", real_stage)
    summary = deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert (summary.resumed, summary.processed) == (2, 2)
    assert not list(out.rglob("*.tmp"))
    assert len(list(out.rglob("*.dcm"))) == 4
    for path in out.rglob("*.dcm"):
        pydicom.dcmread(path)  # every output is a complete DICOM file


def test_sigterm_mid_run_writes_the_audit_and_says_how_to_resume(folder, tmp_path, key, monkeypatch):
    """SIGTERM (a scheduler's or a container's stop) ended a run at once: no audit, no word. Now the audit is written
    with status "terminated (SIGTERM)", the run ends in one line saying how to resume (exit 143 from the CLI), the
    previous handler comes back, and the rerun finishes what was left."""
    import os
    import signal

    from medanomaly.errors import Terminated

    out, real_stage, calls = tmp_path / "out", deid_mod.stage, {"n": 0}

    def stopped(ds, dest, fid):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_stage(ds, dest, fid)

    monkeypatch.setattr(deid_mod, "stage", stopped)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="files finished so far are kept and the audit written; run the same"):
        deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert signal.getsignal(signal.SIGTERM) == before
    audit = json.loads(next((out / ".medanomaly").glob("audit-*.json")).read_text())
    assert audit["status"] == "terminated (SIGTERM)"
    monkeypatch.setattr(deid_mod, "stage", real_stage)
    summary = deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert summary.resumed + summary.processed == 4 and len(list(out.rglob("*.dcm"))) == 4


def test_key_required_and_never_written(folder, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(InputError, match="no de-identification key"):
        load_key()
    with pytest.raises(InputError, match="shorter"):
        load_key(env={KEY_ENV: "short"})
    secret = "env-secret-value-0123456789"
    assert load_key(env={KEY_ENV: secret}) == secret.encode()
    key_file = tmp_path / "k.txt"
    key_file.write_text("file-secret-value-0123456789\n")
    assert load_key(key_file) == b"file-secret-value-0123456789"
    summary = deidentify_folder(folder, tmp_path / "out", load_key(key_file), DeidConfig(burned_in="never"))
    for path in [summary.audit_path, *(tmp_path / "out").rglob("*")]:
        if path.is_file():
            assert b"file-secret-value" not in path.read_bytes()


def test_pseudonyms_stable_across_runs_and_lookup_reidentifies(folder, tmp_path, key):
    lookup = tmp_path / "lookup.bin"
    cfg = DeidConfig(burned_in="never", lookup=lookup)
    deidentify_folder(folder, tmp_path / "a", key, cfg)
    deidentify_folder(folder, tmp_path / "b", key, DeidConfig(burned_in="never"))
    a = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.dcm"))
    b = sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*.dcm"))
    assert a == b  # same key -> same UIDs -> same file names, on every run
    ct_out = next(p for p in (tmp_path / "a").rglob("*.dcm") if pydicom.dcmread(p).Modality == "CT")
    pseudo = str(pydicom.dcmread(ct_out).PatientID)
    assert reidentify(lookup, key, pseudo)["patient_id"] == str(pydicom.dcmread(real_data("pydicom/CT_small.dcm")).PatientID)
    assert b"CompressedSamples" not in lookup.read_bytes()  # encrypted
    with pytest.raises(InputError):
        read_lookup(lookup, b"another-key-0123456789")
    deidentify_folder(folder, tmp_path / "c", b"another-project-key-000", DeidConfig(burned_in="never"))
    c = sorted(p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*.dcm"))
    assert set(a).isdisjoint(c)


def test_cli_deid_shows_progress_and_summary(folder, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deid", str(folder), str(out), "--retain-dates", "--burned-in", "never"])
    assert result.exit_code == 0, result.output
    assert "deid" in result.output and "7/7" in result.output
    assert "de-identified 4, resumed 0, refused 3" in result.output
    assert PATIENT_DIR not in result.output
    ds = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_cli_without_key_fails_cleanly(folder, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    result = CliRunner().invoke(app, ["deid", str(folder), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert not (tmp_path / "out").exists()


def test_cli_parses_safe_private(folder, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    result = CliRunner().invoke(app, ["deid", str(folder), str(tmp_path / "o"), "--keep-private", "bad"])
    assert isinstance(result.exception, InputError)
    result = CliRunner().invoke(
        app, ["deid", str(folder), str(tmp_path / "o"), "--keep-private", "GEMS_ACQU_01:0C", "--burned-in", "never"]
    )
    assert result.exit_code == 0, result.output
    audit = json.loads(next(Path(tmp_path / "o" / ".medanomaly").glob("audit-*.json")).read_text())
    assert audit["options"]["safe_private"] == ["GEMS_ACQU_01:0C"]


def test_real_deid_data_humans_headers_cleaned_pixels_identical(tmp_path, key, needles):
    """deid-data's 'humans': JPEG CT secondary captures full of header PHI (Simpson family).

    Both files carry the same SOP Instance UID: the first (sorted by path) is written, the second
    is refused by keyed id and named as a duplicate in the audit (it used to overwrite the first
    silently while the audit counted 2 files written)."""
    src = real_data("deid/humans")
    summary = deidentify_folder(src, tmp_path / "out", key, DeidConfig(ocr_check=False))
    assert (summary.processed, summary.refused) == (1, 1)
    assert summary.refused_by_reason == {"another input has the same SOP Instance UID (the first was kept)": 1}
    phi = [
        "SIMPSON^HOMER^J^", "HIBBARD^JULIUS", "RIVERIA^NICK", "SPRINGFIELD GENERAL", "Evergreen Terrace",
        "00007041776", "M1212121", "999887722", "20200704", "Seizure", "SGHCT01A", "SIEMENS CSA HEADER",
    ]  # fmt: skip
    outputs = sorted((tmp_path / "out").rglob("*.dcm"))
    for path in outputs:
        raw = path.read_bytes()
        for value in phi:
            assert not any(n in raw for n in needles(value, "ISO_IR 100")), value
    for path in src.glob("*.dcm"):  # the search can fail: the values are in the input
        assert b"SIMPSON" in path.read_bytes() and b"Evergreen Terrace" in path.read_bytes()
    audit = json.loads(summary.audit_path.read_text())
    assert len(audit["pixel_redaction"]) == 1 and all(not p["regions_blanked"] for p in audit["pixel_redaction"])
    (first, second) = sorted(src.glob("*.dcm"))
    assert audit["refused"] == [
        {"file_id": file_id(key, second.name), "reason": next(iter(summary.refused_by_reason)),
         "same_output_as": file_id(key, first.name)}
    ]  # fmt: skip
    out_pixels = [pydicom.dcmread(p).PixelData for p in outputs]
    assert out_pixels == [pydicom.dcmread(first).PixelData]  # scanned, no text: untouched
    assert all(pydicom.dcmread(p).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50" for p in outputs)


def test_lookup_inside_output_is_rejected(folder, tmp_path, key):
    with pytest.raises(InputError, match="outside"):
        deidentify_folder(folder, tmp_path / "out", key, DeidConfig(lookup=tmp_path / "out" / "lookup.bin"))


def test_parallel_workers_give_the_same_output(folder, tmp_path, key, digest):
    one = deidentify_folder(folder, tmp_path / "one", key, DeidConfig(burned_in="never"))
    two = deidentify_folder(folder, tmp_path / "two", key, DeidConfig(burned_in="never"), workers=2)
    assert (two.processed, two.refused) == (one.processed, one.refused) == (4, 3)
    strip = lambda d: {k: v for k, v in d.items() if not k.startswith(".medanomaly")}  # noqa: E731
    assert strip(digest(tmp_path / "one")) == strip(digest(tmp_path / "two"))


def test_files_missing_required_uids_refused_with_clear_reason(folder, tmp_path, key, monkeypatch):
    """Real pydicom files without StudyInstanceUID / SOPClassUID: refused with a reason that says so."""
    shutil.copy(real_data("pydicom/JPEGLSNearLossless_08.dcm"), folder / "no_study_uid.dcm")
    shutil.copy(real_data("pydicom/meta_missing_tsyntax.dcm"), folder / "no_sop_class.dcm")
    summary = deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never"))
    reason = "missing a required UID (SOP Class, SOP Instance, Study or Series)"
    assert summary.refused_by_reason[reason] == 2
    assert "de-identification failed" not in summary.refused_by_reason
    assert summary.processed == 4
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    result = CliRunner().invoke(app, ["deid", str(folder), str(tmp_path / "o2"), "--burned-in", "never"])
    assert result.exit_code == 0, result.output
    assert f"refused 2: {reason}" in result.output and "refused 1: no pixel data" in result.output


def test_cli_usage_errors_print_one_line_and_nothing_on_stdout(folder, tmp_path, monkeypatch, capsys):
    """A file instead of a folder, a folder without DICOM: one 'error: <path>: ...' line, exit 2."""
    import sys

    from medanomaly.cli.app import main

    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "notes.txt").write_text("no images here")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (folder / "fren.dcm", "is a file; deid takes a folder (pass the folder that holds it)", False),
        (tmp_path / "missing", "input folder does not exist", False),
        (text_only, "no file could be de-identified (1 refused, see the audit)", True),
        (empty, "no file could be de-identified (the folder holds no files)", True),
    ]
    for i, (path, reason, ran) in enumerate(cases):
        monkeypatch.setattr(sys, "argv", ["medanomaly", "deid", str(path), str(tmp_path / f"out{i}")])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2
        assert err == f"error: {path}: {reason}\n"
        assert (out != "") == ran  # progress and summary only when files were processed


def test_cli_output_by_option_once_and_required(folder, tmp_path, monkeypatch):
    """``-o OUT`` works like the positional OUT; both at once, or neither, is one usage error."""
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    out = tmp_path / "by_option"
    result = CliRunner().invoke(app, ["deid", str(folder), "-o", str(out), "--burned-in", "never"])
    assert result.exit_code == 0, result.output
    assert list(out.rglob("*.dcm"))
    both = CliRunner().invoke(app, ["deid", str(folder), str(tmp_path / "a"), "-o", str(tmp_path / "b")])
    assert isinstance(both.exception, InputError) and "once" in str(both.exception)
    neither = CliRunner().invoke(app, ["deid", str(folder)])
    assert isinstance(neither.exception, InputError) and "--out" in str(neither.exception)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("limit", [float("nan"), -1.0, 0.0, 1e30, float("inf")])
def test_a_file_size_limit_no_file_can_be_judged_by_is_refused(limit):
    """NaN turned the size limit off silently and -1 refused every file; both are one line before any work."""
    from medanomaly.errors import InputError
    from medanomaly.privacy.one_file import DeidConfig

    with pytest.raises(InputError, match=r"the file size limit \(--max-size-mb\) must be above 0 and at most"):
        DeidConfig(max_file_mb=limit)
    assert DeidConfig(max_file_mb=0.5).max_file_mb == 0.5


def test_files_stored_without_file_meta_are_de_identified_as_the_readers_take_them(tmp_path, key):
    """pydicom's ``OT-PAL-8-face.dcm`` (a picture) and ``rtstruct.dcm`` are stored without the preamble and file meta
    (old ACR-NEMA style; the image readers take them): deid refused both as "not a readable DICOM file". They are now
    de-identified and written with a file meta (their own implicit VR transfer syntax), the picture's pixels as they
    were (no burned-in text scan here), dciodvfy finding no error the source did not have; a file without a SOP class, a big-endian RT Ion Plan
    without meta (no pixels) and random bytes stay refused."""
    import subprocess

    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    src.mkdir()
    for name in ("OT-PAL-8-face.dcm", "rtstruct.dcm", "no_meta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        shutil.copy(get_testdata_file(name), src / name)
    (src / "random.dcm").write_bytes(bytes(range(256)) * 20)
    summary = deidentify_folder(src, tmp_path / "out", key, DeidConfig(burned_in="never"))
    audit = json.loads(summary.audit_path.read_text())
    assert summary.processed == 2 and audit["files"]["refused_by_reason"] == {"no pixel data": 1,
                                                                               "not a readable DICOM file": 2}
    written = {pydicom.dcmread(p).SOPClassUID.name: p for p in (tmp_path / "out").rglob("*.dcm")}
    assert set(written) == {"Secondary Capture Image Storage", "RT Structure Set Storage"}
    face, source = pydicom.dcmread(written["Secondary Capture Image Storage"]), pydicom.dcmread(src / "OT-PAL-8-face.dcm",
                                                                                                force=True)
    assert face.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2" and face.StudyDate == ""
    assert face.PatientName != source.PatientName and face.AccessionNumber == ""
    assert face.PixelData == source.PixelData
    for name, path in (("OT-PAL-8-face.dcm", written["Secondary Capture Image Storage"]),
                       ("rtstruct.dcm", written["RT Structure Set Storage"])):
        errors = [subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True).stderr for p in (src / name, path)]
        before, after = ({line for line in e.splitlines() if line.startswith("Error")} for e in errors)
        assert after <= before, (name, after - before)
