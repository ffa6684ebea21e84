"""The real data sources: a file ``make setup`` fetches that is not there is one error line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medanomaly.data.sources import real_data


def test_missing_real_data_names_the_file_and_the_cli_prints_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """With the data cache missing (a new machine before ``make setup``, or MEDANOMALY_DATA_DIR pointing elsewhere)
    training the lung config was a FileNotFoundError traceback: the error named no file, so the CLI showed it whole."""
    from tests.integration.conftest import run_main

    monkeypatch.setenv("MEDANOMALY_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        real_data("pyradiomics/lung1_image.nrrd")
    assert err.value.filename == str(tmp_path / "nowhere" / "pyradiomics" / "lung1_image.nrrd")
    assert "run `make setup`" in err.value.strerror
    root = Path(__file__).resolve().parents[3]
    code, _out, text = run_main(monkeypatch, capsys, "train", str(root / "configs" / "lung_nodule_tiny.yaml"), "--out",
                                str(tmp_path / "run"))  # fmt: skip
    assert code == 2 and text == (f"error: {tmp_path / 'nowhere' / 'pyradiomics' / 'lung1_image.nrrd'}: real data "
                                  "pyradiomics/lung1_image.nrrd not found; run `make setup` to fetch it\n")  # fmt: skip
