"""Every CSV table a user brings is read one way (medanomaly.io.tables.read_csv): a byte that is not UTF-8 or a field
the csv module refuses is one line naming the file and line (a Latin-1 manifest was a UnicodeDecodeError traceback)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from medanomaly.errors import InputError
from medanomaly.io.tables import read_csv


def test_a_byte_order_mark_is_skipped_and_rows_read(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffpath,label\na.nrrd,benign\n".encode())
    with read_csv(path) as reader:
        assert list(reader) == [{"path": "a.nrrd", "label": "benign"}]


def test_a_latin1_byte_names_its_line_even_past_the_decoders_first_block(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"path,label\n" + b"a.nrrd,benign\n" * 2000 + "b.nrrd,b\u00e9nin\n".encode("latin-1"))
    with pytest.raises(InputError) as caught, read_csv(path, "manifest") as reader:
        list(reader)
    assert str(caught.value) == f"{path}: line 2002: not UTF-8 text (save the manifest as UTF-8)"


def test_a_field_over_the_csv_limit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("path,label\n" + "x" * (csv.field_size_limit() + 10) + ",a\n")
    with pytest.raises(InputError, match=r"line \d+: not a readable CSV table \(field larger than field limit"), \
            read_csv(path) as reader:  # fmt: skip
        list(reader)


def test_a_missing_table_or_one_over_the_file_limit_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="patients CSV not found"), read_csv(tmp_path / "no.csv", "patients CSV"):
        pass
    os.mkfifo(tmp_path / "pipe.csv")  # `<(...)`: no size to check; it was "not found"
    with pytest.raises(InputError, match="patients CSV is not a regular file .*: save it as a file"), read_csv(
            tmp_path / "pipe.csv", "patients CSV"):  # fmt: skip
        pass
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000)
    monkeypatch.setattr("medanomaly.io.tables.MAX_TABLE_BYTES", 1000)
    with pytest.raises(InputError, match=r"CSV table of 3\.91 KiB exceeds the limit of 1000 B"), read_csv(path):
        pass


@pytest.mark.parametrize("reader_name", ["manifest", "luna16", "inbreast", "fusion"])
def test_the_loaders_report_a_latin1_table_in_one_line(tmp_path: Path, reader_name: str) -> None:
    """Each loader that reads a user's CSV goes through read_csv (the four columns are each loader's own)."""
    bad = "\u00e9".encode("latin-1")
    path = tmp_path / "t.csv"
    if reader_name == "manifest":
        from medanomaly.data.manifest import read_manifest as read

        path.write_bytes(b"path,label,patient_id\na.nrrd,b" + bad + b"nin,P1\n")
    elif reader_name == "luna16":
        from medanomaly.data.luna16 import read_annotations as read

        path.write_bytes(b"seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2" + bad + b",1,2,3,4\n")
    elif reader_name == "inbreast":
        from medanomaly.data.inbreast import read_table as read

        path.write_bytes(b"File Name;Bi-Rads\n" + bad + b";4\n")
    else:
        from medanomaly.fusion.data import read_manifest as read

        path.write_bytes(b"patient_id,T1_path,PD_path,label\nP" + bad + b",a,b,1\n")
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}: line 2: not UTF-8 text") and "\n" not in str(caught.value)


def test_a_column_given_twice_is_refused(tmp_path):
    """``path,label,Label`` used to read the second label column silently."""
    table = tmp_path / "m.csv"
    table.write_text("path,label, Label\na.nrrd,benign,malignant\n")
    with pytest.raises(InputError, match=r"m\.csv: line 1: column 'Label' appears twice in the manifest"):
        with read_csv(table, "manifest") as rows:
            list(rows)
