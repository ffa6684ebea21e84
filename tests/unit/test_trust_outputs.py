"""Issue 18, item 7: honest outputs.

A flat explanation map is flagged (JSON ``flat_map``, "FLAT MAP" on the overlay, no peak cross);
model-input overlays say "model pixels", not mm; report cases are named by their key (file name);
explain JSON stays valid JSON (no NaN); a training at chance level says so in the log,
``status.json`` and a banner of ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medanomaly.data.arrays import LabelledImages
from medanomaly.types import Volume


def _texts(fig) -> str:
    """Every string drawn on a figure (titles, labels, free text)."""
    from matplotlib.text import Text

    return " | ".join(t.get_text() for t in fig.findobj(Text))


def _capture_overlay(monkeypatch, image: Volume, heat: Volume, tmp_path: Path, **kw) -> tuple[str, int]:
    """Draw the overlay; return the figure's text and the number of peak crosses drawn."""
    import matplotlib.pyplot as plt

    from medanomaly.explain.overlay import overlay_png

    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen["text"] = _texts(fig)
        seen["crosses"] = sum(1 for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "+")
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    overlay_png(image, heat, tmp_path / "o.png", method="gradcam", **kw)
    return seen["text"], seen["crosses"]


@pytest.mark.parametrize("value", [0.0, 0.37, float("nan")])
def test_a_flat_map_is_flagged_and_has_no_peak_cross(monkeypatch, tmp_path, value):
    from medanomaly.explain.maps import is_flat, peak_mm

    image = Volume(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    heat = image.with_array(np.full((5, 16, 16), value, np.float32))
    assert is_flat(heat.array) and peak_mm(heat) is None
    text, crosses = _capture_overlay(monkeypatch, image, heat, tmp_path)
    assert "FLAT MAP" in text and crosses == 0


def test_a_map_with_a_peak_keeps_its_cross(monkeypatch, tmp_path):
    from medanomaly.explain.maps import is_flat, peak_mm

    image = Volume(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    arr = np.zeros((5, 16, 16), np.float32)
    arr[2, 4, 11] = 1.0
    heat = image.with_array(arr)
    assert not is_flat(arr) and peak_mm(heat) == pytest.approx((11.0, 4.0, 2.0))
    text, crosses = _capture_overlay(monkeypatch, image, heat, tmp_path)
    assert "FLAT MAP" not in text and crosses == 3  # one per panel through the peak


def test_a_flat_map_misses_the_pointing_game():
    from medanomaly.explain.faithfulness import pointing_game

    mask = np.zeros((5, 16, 16), np.uint8)
    mask[1:4, 5:11, 5:11] = 1  # the image centre: a plateau's centroid would "hit" it
    lesion = Volume(mask)
    assert pointing_game(lesion.with_array(np.ones((5, 16, 16), np.float32)), lesion) is False


def test_overlay_axes_say_model_pixels_for_model_inputs(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    heat = rng.random((1, 16, 16)).astype(np.float32)
    text, _ = _capture_overlay(monkeypatch, Volume(heat, meta={"model_pixels": True}), Volume(heat), tmp_path)
    assert "model pixels" in text and "mm" not in text.split(" | ")
    text_mm, _ = _capture_overlay(monkeypatch, Volume(heat, spacing=(0.7, 0.7, 1.0)),
                                  Volume(heat, spacing=(0.7, 0.7, 1.0)), tmp_path)
    assert "mm" in text_mm.split(" | ") and "model pixels" not in text_mm


def _tiny_classifier_run():
    """A whole-image Explainable whose Grad-CAM is empty (a constant model: no gradient anywhere)."""
    from medanomaly.explain.adapters import Explainable

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            torch.nn.init.zeros_(self.conv.weight)
            torch.nn.init.zeros_(self.conv.bias)

        def forward(self, x):
            return torch.relu(self.conv(x)).amax(dim=(2, 3))

    return Explainable(model=Constant().eval(), kind="classification", synthetic=True)


def test_explain_json_flags_a_flat_map_and_stays_valid_json(tmp_path):
    from medanomaly.explain.driver import explain_file
    from medanomaly.io import write

    image = tmp_path / "img.nrrd"
    write(Volume(np.random.default_rng(2).random((1, 16, 16)).astype(np.float32)), image)
    report = explain_file(_tiny_classifier_run(), image, "gradcam", tmp_path / "out")
    text = (tmp_path / "out" / "explain.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert report["flat_map"] is True and data["flat_map"] is True and data["peak_mm"] is None


def test_explain_json_never_holds_nan(tmp_path):
    """A reference lesion's finding has score NaN: written as null, never as the bare NaN token."""
    from medanomaly.jsonio import write_json

    path = write_json(tmp_path / "explain.json", {"findings": [{"score": float("nan"), "peak_mm": [np.float32(1)]}]})
    assert "NaN" not in path.read_text() and json.loads(path.read_text())["findings"][0]["score"] is None


def test_explain_cli_prints_valid_json(tmp_path, monkeypatch):
    """``medanomaly explain`` prints its summary as valid JSON: a NaN score becomes null."""
    from typer.testing import CliRunner

    import medanomaly.engine
    import medanomaly.explain.driver as driver
    from medanomaly.cli.app import app

    class Model:
        def explainable(self):
            return None

    monkeypatch.setattr(medanomaly.engine, "load_model", lambda run: Model())
    report = {"findings": [{"score": float("nan")}], "flat_map": True}
    monkeypatch.setattr(driver, "explain_file", lambda *a, **k: report)
    image = tmp_path / "x.nrrd"
    image.write_bytes(b"")
    result = CliRunner().invoke(app, ["explain", str(tmp_path), str(image), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data["findings"][0]["score"] is None


def test_report_cases_are_named_by_their_key(tmp_path, monkeypatch):
    from medanomaly.classify.task import explain_examples

    class Clf:
        class_names = ("normal", "abnormal")
        synthetic = False
        models = [torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
                                      torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()).eval()]

        def call(self, probs):
            return probs.argmax(1), np.zeros(len(probs), bool)

    from medanomaly.explain import adapters

    rng = np.random.default_rng(3)
    images = rng.random((4, 1, 16, 16)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    keys = np.array(["a.png", "scan_17.png", "c.png", "d.png"], object)
    monkeypatch.setattr(adapters, "from_classifier",
                        lambda clf: adapters.Explainable(model=clf.models[0], kind="classification"))
    out = explain_examples(Clf(), images, labels, probs, tmp_path / "explain", 4, keys=keys)
    captions = " ".join(c for _, c in out)
    assert "case scan_17.png" in captions and "of the split" not in captions


# ------------------------------------------------------------------------------- chance level
def _images(n: int, seed: int, blank: bool = False) -> LabelledImages:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.normal(0, 0.1, (n, 1, 8, 8)).astype(np.float32)
    x[labels == 1, :, 2:6, 2:6] += 1.0
    if blank:
        x[:] = 0.3  # every validation score ties: AUC 0.5
    return LabelledImages(x, labels, [f"p{i}" for i in range(n)], ("normal", "abnormal"))


def test_a_training_at_chance_says_so_in_log_status_and_report(tmp_path, caplog):
    from medanomaly.engine.run import read_status, write_status
    from medanomaly.evaluate.report import evaluate_classification
    from medanomaly.registry import MODELS
    from medanomaly.train.loop import TrainSettings, fit

    run = tmp_path / "run"
    run.mkdir()
    write_status(run, "running")
    torch.manual_seed(0)
    net = MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0)
    with caplog.at_level("WARNING", logger="medanomaly.train.engine"):
        result = fit(net, _images(32, 0), _images(16, 1, blank=True),
                     TrainSettings(epochs=1, batch_size=16, progress=False), run_dir=run / "members" / "0")
    assert result.chance_level and "chance level" in caplog.text  # the log
    write_status(run, "complete")
    status = read_status(run)
    assert status.warnings and status.warnings[0].startswith("members/0: ") and "chance level" in status.warnings[0]

    y = np.arange(40) % 2
    p1 = np.random.default_rng(4).random(40)  # a score unrelated to the truth: the CI contains 0.5
    evaluate_classification(run, y, np.stack([1 - p1, p1], 1), ("normal", "abnormal"), n_bootstrap=200)
    html = (run / "report.html").read_text()
    assert html.count('class="banner chance"') == 2 and "training: members/0" in html and "contains 0.5" in html
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 2


def test_a_good_training_has_no_warning(tmp_path):
    from medanomaly.engine.run import read_status, write_status
    from medanomaly.evaluate.report import evaluate_classification

    run = tmp_path / "run"
    run.mkdir()
    (run / "warnings.json").write_text("[]")
    write_status(run, "complete")
    assert read_status(run).warnings == []
    y = np.arange(60) % 2
    p1 = np.clip(0.8 * y + np.random.default_rng(5).uniform(0, 0.3, 60), 0, 1)
    evaluate_classification(run, y, np.stack([1 - p1, p1], 1), ("normal", "abnormal"), n_bootstrap=200)
    assert 'class="banner chance"' not in (run / "report.html").read_text()
    assert json.loads((run / "metrics.json").read_text())["warnings"] == []


def test_an_earlier_trainings_warnings_are_not_carried_over(tmp_path):
    import os
    import time

    from medanomaly.engine.run import read_status, write_status

    run = tmp_path / "run"
    run.mkdir()
    old = run / "warnings.json"
    old.write_text(json.dumps(["val_auc 0.5 is at chance level"]))
    past = time.time() - 3600
    os.utime(old, (past, past))
    write_status(run, "running")
    write_status(run, "complete")
    assert read_status(run).warnings == []
