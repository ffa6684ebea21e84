"""``predict --out`` writes one consistent set of files per input: two inputs of one name are refused before any work
(the second overwrote the first's JSON and left the first's findings beside it), and a prediction without findings or
map removes an earlier prediction's findings and map of that name (they no longer belonged to the JSON beside them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.engine.outputs import check_distinct_outputs, write_prediction
from medanomaly.errors import InputError
from medanomaly.types import Finding, Prediction, Volume


def _prediction(with_findings: bool) -> Prediction:
    findings = (Finding(center_mm=(1.0, 2.0, 3.0), bbox_mm=((0.0, 1.0, 2.0), (2.0, 3.0, 4.0)), score=0.9,
                        label="malignant"),) if with_findings else ()  # fmt: skip
    heat = Volume(np.zeros((1, 4, 4), np.float32)) if with_findings else None
    return Prediction(scores=(0.2, 0.8), class_names=("benign", "malignant"), label="malignant", findings=findings,
                      anomaly_map=heat)  # fmt: skip


def test_two_inputs_of_one_name_are_refused_before_any_work():
    check_distinct_outputs(["a/x.nrrd", "b/y.nrrd", "c/x.png.txt"])
    with pytest.raises(InputError, match=r"a/x\.nrrd and b/x\.nii\.gz would write the same outputs \(x\.json\)"):
        check_distinct_outputs(["a/x.nrrd", "b/x.nii.gz"])


def test_a_later_prediction_leaves_no_stale_findings_or_map(tmp_path):
    first = write_prediction(tmp_path, "x.nrrd", _prediction(with_findings=True))
    assert sorted(p.name for p in first) == ["x.findings.json", "x.json", "x_anomaly_map.nii.gz"]
    write_prediction(tmp_path, "x.nrrd", _prediction(with_findings=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_the_cli_refuses_two_inputs_of_one_name(tmp_path, monkeypatch, capsys):
    import sys

    from medanomaly.cli.app import main

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.nrrd").write_bytes(b"NRRD0004\n")
    monkeypatch.setattr(sys, "argv", ["medanomaly", "predict", str(tmp_path / "no-run"), str(tmp_path / "a/x.nrrd"),
                                      str(tmp_path / "b/x.nrrd"), "--out", str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2 and "would write the same outputs (x.json)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_prediction_whose_map_cannot_be_written_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    """The JSON and findings were written first, then the map failed (a full disk): a new x.json stood beside the
    earlier prediction's map. Now the map goes first and the three files go in together or not at all."""
    import errno

    import medanomaly.io as mio

    write_prediction(tmp_path, "x.nrrd", _prediction(with_findings=True))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mio, "write", disk_full)
    changed = _prediction(with_findings=True)
    changed = Prediction(scores=(0.9, 0.1), class_names=changed.class_names, label="benign",
                         findings=changed.findings, anomaly_map=changed.anomaly_map)  # fmt: skip
    with pytest.raises(OSError, match="No space left on device"):
        write_prediction(tmp_path, "x.nrrd", changed)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("name", ["../../../tmp/evil", "a/b", "..", "x\ny", "/etc/passwd", ""])
def test_a_default_output_folder_stays_one_folder_inside_runs(name):
    """A config named '../../../x' (train without -o) wrote its run outside runs/, three levels up."""
    from medanomaly.engine.verbs import default_out

    out = default_out("train", name)
    assert out.parent == Path("runs") and len(out.parts) == 2 and ".." not in out.parts
    assert "/" not in out.name and "\n" not in out.name


def test_a_default_output_folder_that_exists_is_not_reused(tmp_path, monkeypatch):
    """Two commands on inputs of one name within one second (a loop over a/scan.nii, b/scan.nii) shared a folder:
    the second wrote over the first one's results."""
    from medanomaly.engine.verbs import default_out

    monkeypatch.chdir(tmp_path)
    first = default_out("detect", "scan.nii")
    first.mkdir(parents=True)
    second = default_out("detect", "scan.nii")
    second.mkdir()
    third = default_out("detect", "scan.nii")
    if third.name.startswith(first.name):  # the clock did not move on meanwhile
        assert (second.name, third.name) == (f"{first.name}-2", f"{first.name}-3")
    assert len({first, second, third}) == 3
