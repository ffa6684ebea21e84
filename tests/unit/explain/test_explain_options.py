"""``explain``'s options are checked before anything is read or written: a NaN field of view was a traceback, a
negative or huge one gave no picture, and ``--target`` on a detector was ignored silently."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medanomaly.errors import InputError
from medanomaly.explain.adapters import Explainable
from medanomaly.explain.driver import check_options

ROOT = Path(__file__).resolve().parents[3]
CLASSIFIER = Explainable(model=None, class_names=("benign", "uncertain", "malignant"), kind="classification")
DETECTOR = Explainable(model=None, patch_size=(8, 64, 64), kind="lung_nodule", runner=object())


@pytest.mark.parametrize("fov", [float("nan"), float("inf"), -5.0, 0.0, 4.9, 1e12])
def test_a_field_of_view_outside_5_to_1000_mm_is_refused(fov):
    with pytest.raises(InputError, match=r"--fov must be 5\.\.1000 mm"):
        check_options(DETECTOR, fov, None)


def test_a_target_the_model_does_not_have_is_refused():
    check_options(CLASSIFIER, 80.0, 2)
    check_options(DETECTOR, 5.0, None)
    with pytest.raises(InputError, match=r"--target must be a class index 0\.\.2 \(benign, uncertain, malignant\), got 3"):
        check_options(CLASSIFIER, 80.0, 3)
    with pytest.raises(InputError, match="got -1"):
        check_options(CLASSIFIER, 80.0, -1)
    with pytest.raises(InputError, match="--target picks a class of a classifier; a lung_nodule run explains its map"):
        check_options(DETECTOR, 80.0, 0)


def test_the_cli_says_it_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from medanomaly.cli.app import main

    out = tmp_path / "explained"
    image = ROOT / "tests" / "fixtures" / "missing_image_never_read.nrrd"
    monkeypatch.setattr(sys, "argv", ["medanomaly", "explain", str(ROOT / "tests" / "fixtures" / "lung_detector"),
                                      str(image), "--fov", "nan", "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit) as code:
        main()
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and err == "error: --fov must be 5..1000 mm, got nan" and not out.exists()


def test_a_findings_file_listing_more_than_the_limit_is_refused_before_any_explanation(tmp_path):
    """A hand-made findings.json may list a million findings, each a patch explanation and a PNG."""
    import json

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.engine import load_model
    from medanomaly.explain.driver import MAX_EXPLAINED_FINDINGS, explain_file

    row = {"label": "nodule", "center_mm": [0, 0, -700], "bbox_mm": [[0, 0, -700], [1, 1, -699]], "score": 0.5}
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": [row] * (MAX_EXPLAINED_FINDINGS + 1)}))
    model = load_model(ROOT / "tests" / "fixtures" / "lung_detector")
    with pytest.raises(InputError, match=r"1,001 findings to explain, more than 1,000"):
        explain_file(model.explainable(), pyradiomics_case("lung1")[0], "gradcam", tmp_path / "out",
                     findings_path=findings)  # fmt: skip
    assert not list((tmp_path / "out").glob("*.png"))


def test_an_unknown_method_or_layer_is_an_option_error_not_the_images(tmp_path, monkeypatch, capsys):
    """Both were reported against the image file, as if it were at fault, after it had been read."""
    from medanomaly.cli.app import main

    image = ROOT / "tests" / "fixtures" / "missing_image_never_read.nrrd"
    run = str(ROOT / "tests" / "fixtures" / "lung_detector")
    for option, words in ((["--method", "nope"], "error: unknown explainer 'nope'; valid: gradcam, "),
                          (["--layer", "nope"], "error: unknown layer 'nope'; valid layers: ")):  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["medanomaly", "explain", run, str(image), *option, "--out", str(tmp_path / "x")])
        with pytest.raises(SystemExit) as code:
            main()
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2 and err.startswith(words) and "\n" not in err and not (tmp_path / "x").exists()
