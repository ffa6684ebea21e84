"""No header value in a log or an error line: pydicom logs every value it finds invalid (``Invalid value for VR UI: '<value>'``)
through its logger as well as through ``warnings``, so a service logging at INFO wrote header values, possibly a
name or a birth date, into its log. The CLI and the service quiet the DICOM libraries' loggers."""

from __future__ import annotations

import logging
import sys

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medanomaly.io.library_logs import QUIETED_LIBRARY_LOGGERS

PHI = "JANE.DOE.19450101"  # a name and a birth date where a UID belongs: invalid for VR UI, so pydicom quotes it


@pytest.fixture
def phi_dicom(tmp_path, monkeypatch):
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = PHI
    ds.save_as(tmp_path / "phi.dcm", enforce_file_format=True)
    for name in QUIETED_LIBRARY_LOGGERS:  # as a fresh process has them
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    return tmp_path / "phi.dcm"


def test_the_cli_logs_no_header_value(phi_dicom, monkeypatch, caplog, capsys):
    from medanomaly.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medanomaly", "info", str(phi_dicom), "--json"])
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert PHI not in caplog.text and PHI not in capsys.readouterr().err


def test_the_service_logs_no_header_value(phi_dicom, tmp_path, caplog):
    from medanomaly.deploy.service.app import ServiceConfig, create_app
    from medanomaly.deploy.service.tokens import new_token
    from medanomaly.io import read

    tokens = tmp_path / "tokens.json"
    new_token(tokens)
    create_app(ServiceConfig(models={}, data_dir=tmp_path / "data", tokens=tokens))
    with caplog.at_level(logging.INFO):  # the service's log level (``medanomaly serve``)
        read(phi_dicom)
    assert PHI not in caplog.text


def test_a_dicom_error_quotes_no_header_value(tmp_path):
    """A NumberOfFrames holding a name made the error line ``cannot decode pixel data (invalid literal for int()
    with base 10: 'JANEDOE')``: the value pydicom quotes is hidden, the DICOM names it quotes are kept."""
    from medanomaly.errors import InputError
    from medanomaly.io import read

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.add_new(0x00280008, "IS", "87654321")  # NumberOfFrames, then overwritten in the file with a name
    ds.save_as(tmp_path / "nf.dcm", enforce_file_format=True)
    raw = (tmp_path / "nf.dcm").read_bytes()
    (tmp_path / "nf.dcm").write_bytes(raw.replace(b"87654321", b"JANEDOE "))
    with pytest.raises(InputError) as error:
        read(tmp_path / "nf.dcm")
    assert "JANEDOE" not in str(error.value) and "'<value>'" in str(error.value)


def test_a_modality_that_is_not_a_dicom_term_is_kept_as_ot(tmp_path):
    """The Modality is printed in errors (``the model expects modality MG, got <modality>``), listings and results:
    a name typed into it must not travel with it. Only DICOM defined terms are kept; anything else reads as OT."""
    from medanomaly.deploy.archive import walk_archive
    from medanomaly.io import read

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "JANE DOE"
    ds.save_as(tmp_path / "m.dcm", enforce_file_format=True)
    assert read(tmp_path / "m.dcm").meta["modality"] == "OT"
    assert [entry.modality for entry in walk_archive(tmp_path).series] == ["OT"]
