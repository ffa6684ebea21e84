"""Hostile JSON in files a user hands us (a run folder, an exported package, findings, a lesion set):
one line naming the file, never a RecursionError trace, and the size checked before the read."""

from __future__ import annotations

from pathlib import Path

import pytest

from medanomaly.data.lesion_store import read_lesion_set
from medanomaly.deploy.package import read_manifest
from medanomaly.engine.run import read_run_info
from medanomaly.errors import InputError
from medanomaly.io.findings import read_findings
from medanomaly.jsonio import JsonLimitError, read_json

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads recursed past Python's limit on this


def test_read_json_refuses_deep_and_oversized_files(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(JsonLimitError, match="nested too deeply"):
        read_json(deep)
    small = tmp_path / "ok.json"
    small.write_text('{"a": [1, 2]}')
    assert read_json(small) == {"a": [1, 2]}
    with pytest.raises(JsonLimitError, match="13 bytes, over the 12-byte limit"):
        read_json(small, max_bytes=12)


@pytest.mark.parametrize(
    ("file_name", "read", "message"),
    [
        ("manifest.json", read_manifest, r"pkg: manifest.json: JSON nested too deeply"),
        ("model.json", read_run_info, r"pkg: model.json: JSON nested too deeply"),
        ("dataset.json", read_lesion_set, r"pkg: dataset.json: JSON nested too deeply"),
    ],
)
def test_deep_json_in_a_folder_is_one_line_naming_it(tmp_path: Path, file_name, read, message) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / file_name).write_text(DEEP)
    with pytest.raises(InputError, match=message):
        read(folder)


def test_deep_findings_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "findings.json"
    path.write_text(DEEP)
    with pytest.raises(InputError, match=r"findings.json: not a valid findings.json \(JSON nested too deeply"):
        read_findings(path)
