"""DIMSE PACS names and AE titles (no network): every bad form is one line, before any association."""

from __future__ import annotations

import pytest

from medanomaly.deploy.dimse import DimseClient, check_ae_title, parse_dimse_url
from medanomaly.errors import InputError


def test_a_dimse_url_names_host_port_and_called_ae_title() -> None:
    assert parse_dimse_url("dimse://pacs.hospital.local:11112/PACS") == ("pacs.hospital.local", 11112, "PACS")
    assert parse_dimse_url("dimse://10.0.0.5/DCM4CHEE") == ("10.0.0.5", 104, "DCM4CHEE")  # DICOM's own port
    assert parse_dimse_url("dimse://[::1]:4242/MY%20PACS") == ("::1", 4242, "MY PACS")


@pytest.mark.parametrize(("url", "words"), [
    ("dimse://pacs:104", "name the PACS's AE title"),
    ("dimse://pacs:104/", "name the PACS's AE title"),
    ("dimse://pacs:104/A_TITLE_OF_17_CHR", "1 to 16 printable ASCII"),
    ("dimse://pacs:104/BACK%5CSLASH", "no backslash"),
    ("dimse://pacs:104/%20%20", "1 to 16 printable ASCII"),
    ("dimse://pacs:104/T%C3%9CR", "1 to 16 printable ASCII"),
    ("dimse://pacs:0/PACS", "port 0"),
    ("dimse://pacs:70000/PACS", "not a URL"),
    ("dimse://[::1/PACS", "not a URL"),
    ("dimse:///PACS", "dimse://HOST:PORT/CALLED_AE"),
    ("dimse://pacs:104/PACS?x=1", "dimse://HOST:PORT/CALLED_AE"),
    ("dicom://pacs:104/PACS", "dimse://HOST:PORT/CALLED_AE"),
])  # fmt: skip
def test_a_bad_dimse_url_is_one_line(url: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as err:
        parse_dimse_url(url)
    assert "\n" not in str(err.value)


def test_a_dimse_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(InputError, match="DIMSE carries no credentials") as err:
        parse_dimse_url("dimse://user:s3cret@pacs:104/PACS")
    assert "s3cret" not in str(err.value)


def test_our_ae_title_is_checked_before_any_association() -> None:
    assert check_ae_title("MEDANOMALY") == "MEDANOMALY"
    for bad in ("", "   ", "X" * 17, "A\\B", "TAB\tX", "ÄRZTE"):
        with pytest.raises(InputError, match="--ae-title"):
            DimseClient("dimse://127.0.0.1:104/PACS", ae_title=bad)


def test_credentials_in_the_environment_are_refused_for_a_dimse_pacs_and_an_ae_title_for_dicomweb() -> None:
    from medanomaly.deploy.pacs import connect
    from medanomaly.deploy.pacs_auth import PacsAuth

    auth = PacsAuth.from_env({"MEDANOMALY_PACS_TOKEN": "tok-123"})
    with pytest.raises(InputError, match="DIMSE carries no credentials; unset MEDANOMALY_PACS_USER") as err:
        connect("dimse://127.0.0.1:104/PACS", auth=auth)
    assert "tok-123" not in str(err.value)
    with pytest.raises(InputError, match="--ae-title names us to a DIMSE PACS"):
        connect("http://127.0.0.1:8042/dicom-web", ae_title="MEDANOMALY")


def test_a_study_filter_a_c_find_cannot_match_is_one_line() -> None:
    client = DimseClient("dimse://127.0.0.1:104/PACS")
    for keyword in ("NoSuchKeyword", "ReferencedSeriesSequence"):
        with pytest.raises(InputError, match=f"study filter '{keyword}'"):
            client.search_for_studies(search_filters={keyword: "x"})


def test_a_c_find_answer_with_an_attribute_pydicom_cannot_convert_keeps_the_rest() -> None:
    """A PACS answered a Japanese study's orientation as ``1.0000¥0.0000...`` (its character set's backslash): the
    whole answer's conversion to DICOM JSON raised, and the poll ended in a traceback. pydicom's badVR.dcm has such
    an attribute (an IS of ``1A``)."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medanomaly.deploy.dimse import _as_json

    answer = pydicom.dcmread(get_testdata_file("badVR.dcm"), stop_before_pixels=True)
    with pytest.raises(ValueError):
        answer.to_json_dict()
    converted = _as_json(answer)
    assert converted["0020000E"]["Value"] == [answer.SeriesInstanceUID] and len(converted) == len(answer) - 1
