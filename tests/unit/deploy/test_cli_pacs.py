"""The ``pacs`` command and the archive-predict body: bad input is one line (exit 2 through the app)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medanomaly.errors import InputError


def _app() -> typer.Typer:
    from medanomaly.cli import pacs

    app = typer.Typer()
    pacs.register(app)

    @app.command()
    def other() -> None:  # a second command, so typer keeps "pacs" as a subcommand name
        pass

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pacs_unreachable_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"
    result = CliRunner().invoke(_app(), ["pacs", str(tmp_path / "run"), "--url", url, "--out", str(tmp_path / "w")])
    assert isinstance(result.exception, InputError), result.output
    assert "cannot reach the PACS" in str(result.exception) and "\n" not in str(result.exception)


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--series-filter", "Modality"], "series filter"), (["--memory-limit", "lots"], "memory limit"),
     (["--study-filter", "CT"], "study filter"), (["--url", "ftp://x"], "http"),
     (["--watch", "--interval", "-5"], "--interval must be 1..86400 seconds, got -5"),
     (["--watch", "--interval", "nan"], "got nan"), (["--watch", "--interval", "0"], "got 0"),
     (["--site", "../../x"], "unknown finding site '../../x'"),
     (["--interval", "5"], "give --watch too"), (["--move-host", "10.0.0.1"], "give --move-port too"),
     (["--pair-wait", "2"], "--pair-wait holds a set for a later poll of --watch; give --watch too"),
     (["--watch", "--pair-wait", "-1"], "--pair-wait must be 0..744 hours, got -1"),
     (["--watch", "--pair-wait", "inf"], "got inf"), (["--pair-by", "visit"], "--pair-by must be study or patient")],
)  # fmt: skip
def test_pacs_bad_options_are_one_line(tmp_path: Path, args: list[str], match: str) -> None:
    base = ["pacs", str(tmp_path / "run"), "--url", "http://127.0.0.1:1/dicom-web"]
    result = CliRunner().invoke(_app(), base[:2] + (args if "--url" in args else base[2:] + args))
    assert isinstance(result.exception, InputError) and match in str(result.exception)


def test_predict_archive_refuses_a_bad_filter_before_loading(tmp_path: Path) -> None:
    from medanomaly.cli.pacs import predict_archive

    with pytest.raises(InputError, match="unknown field"):
        predict_archive(tmp_path / "no-run", tmp_path, tmp_path / "out", series_filter=["Colour=red"])
    with pytest.raises(InputError, match="run folder not found"):
        predict_archive(tmp_path / "no-run", tmp_path, tmp_path / "out")


def test_an_archive_without_one_readable_series_is_one_error_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from medanomaly.cli.pacs import predict_archive

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.dcm").write_bytes(b"garbage")
    (archive / "b.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 40)
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "lung_detector"
    code = predict_archive(fixture, archive, tmp_path / "out", dicom=False, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {archive}: no readable DICOM series (2 file(s) skipped, see ")
    assert (tmp_path / "out" / "problems.csv").read_text().count("\n") == 3  # header + the two files and why


@pytest.mark.parametrize("address, words", [
    ("127.0.0.1:{free}", "cannot reach Ray at 127.0.0.1:{free} (Connection refused)"),
    ("ray://127.0.0.1:{free}", "cannot reach Ray at ray://127.0.0.1:{free}"),
    ("garbage", "Ray address 'garbage': expected HOST:PORT, ray://HOST:PORT, auto or local"),
])  # fmt: skip
def test_an_unreachable_ray_address_is_one_line_before_any_work(tmp_path: Path, address: str, words: str) -> None:
    """Ray retried an unreachable address for minutes, a warning every few seconds, with OUT already locked."""
    from medanomaly.cli.pacs import predict_archive

    free = str(_free_port())
    address, words = address.replace("{free}", free), words.replace("{free}", free)
    with pytest.raises(InputError) as caught:
        predict_archive(tmp_path / "never_loaded_run", tmp_path, tmp_path / "out", engine="ray", address=address)
    assert str(caught.value).startswith(words) and not (tmp_path / "out").exists()


def test_the_archive_options_the_docs_name_reach_the_batch_from_predict(small_archive, tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    """docs/dicom_out.md names --keyed-ids and --memory-limit for `predict RUN ARCHIVE`, but predict had neither (the
    batch took them from Python only): the key that hides UIDs could not be asked for. For files they are one line."""
    import csv

    from tests.integration.conftest import run_main

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "lung_detector"
    monkeypatch.setenv("MEDANOMALY_DEID_KEY", "a-secret-key-of-16+-bytes")
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fixture), str(small_archive.root), "--out", str(out),
                            "--keyed-ids", "--no-dicom", "--memory-limit", "100K")  # every 8x64x64 crop: 128 KiB
    text = (out / "results.csv").read_text()
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert code == 0 and rows and not any(uid in text for uid in small_archive.good), err
    assert all(r["series_id"].startswith(("S-", "file-")) for r in rows)
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) >= len(small_archive.good) and "over the limit of 100 KiB" in refused[0]["reason"]
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fixture), str(next(small_archive.root.rglob("*.dcm"))),
                            "--keyed-ids", "--memory-limit", "1G")  # fmt: skip
    assert code == 2 and "--memory-limit, --keyed-ids: for an archive" in err, err
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fixture), str(small_archive.root), "--workers", "4")
    assert code == 2 and "--workers is for --engine ray" in err, err


@pytest.mark.parametrize("command", ["pacs", "listen"])
def test_the_bridge_and_the_node_take_keyed_ids_from_the_command_line(tmp_path: Path, monkeypatch, capsys, fake_module,
                                                                      command: str) -> None:  # fmt: skip
    """``pacs`` and ``listen`` had no ``--keyed-ids``: their records and error lines could hide UIDs from Python only.
    The key reaches the run; without one anywhere it is one line before any work."""
    from medanomaly.deploy import listener, pacs
    from medanomaly.deploy.results import keyed_id
    from tests.integration.conftest import run_main

    given: dict = {}
    monkeypatch.setattr("medanomaly.engine.load_model", lambda run: fake_module.FakeDetector())
    monkeypatch.setattr(pacs, "connect", lambda *a, **k: object())
    monkeypatch.setattr(pacs, "run_pacs", lambda *a, **k: given.update(k) or pacs.PacsSummary())
    monkeypatch.setattr(listener, "run_listener", lambda *a, **k: given.update(k))
    args = (["pacs", str(tmp_path / "run"), "--url", "http://127.0.0.1:1/dicom-web"] if command == "pacs" else
            ["listen", str(tmp_path / "run"), "--allow-ae", "SENDER", "--port", str(_free_port())])  # fmt: skip
    monkeypatch.delenv("MEDANOMALY_DEID_KEY", raising=False)
    code, _, err = run_main(monkeypatch, capsys, *args, "--out", str(tmp_path / "w"), "--keyed-ids")
    assert code == 2 and "MEDANOMALY_DEID_KEY" in err and not given, err
    monkeypatch.setenv("MEDANOMALY_DEID_KEY", "a-secret-key-of-16+-bytes")
    code, _, err = run_main(monkeypatch, capsys, *args, "--out", str(tmp_path / "w"), "--keyed-ids")
    assert code == 0 and keyed_id(given["key"], "series", "1.2.3", "S-") == keyed_id(
        b"a-secret-key-of-16+-bytes", "series", "1.2.3", "S-"), err


@pytest.mark.parametrize("command", ["pacs", "listen"])
def test_the_bridge_and_the_node_take_pair_by_patient_and_a_pair_wait_in_hours(tmp_path: Path, monkeypatch, capsys,
                                                                               fake_module, command: str) -> None:  # fmt: skip
    """``pacs`` and ``listen`` had no ``--pair-by`` (archive only); with a fusion model it reaches the run with
    ``--pair-wait`` in seconds; another model is one line before any poll or association."""
    from medanomaly.deploy import listener, pacs
    from tests.integration.conftest import run_main

    given: dict = {}
    model = fake_module.FakeDetector()
    monkeypatch.setattr("medanomaly.engine.load_model", lambda run: model)
    monkeypatch.setattr(pacs, "connect", lambda *a, **k: object())
    monkeypatch.setattr(pacs, "run_pacs", lambda *a, **k: given.update(k) or pacs.PacsSummary())
    monkeypatch.setattr(listener, "run_listener", lambda model, out, options, batch, **k: given.update(options=batch))
    args = (["pacs", str(tmp_path / "run"), "--url", "http://127.0.0.1:1/dicom-web", "--watch", "--interval", "60"]
            if command == "pacs" else ["listen", str(tmp_path / "run"), "--allow-ae", "SENDER", "--port",
                                       str(_free_port())])  # fmt: skip
    args += ["--out", str(tmp_path / "w"), "--pair-by", "patient", "--pair-wait", "1.5"]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "takes one series at a time" in err and not given, err
    monkeypatch.setattr("medanomaly.deploy.batch_context.selection_policy", lambda task, info: "fusion")
    monkeypatch.setattr(type(model), "modalities", ("T1", "PD"), raising=False)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 0 and given["options"].pair_by == "patient" and given["options"].pair_wait_s == 5400.0, err
