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


def _pipe_writing(tmp_path: Path, payload: bytes) -> Path:
    """A named pipe with a thread writing ``payload`` into it (what ``<(command)`` gives a program)."""
    import os
    import threading

    tmp_path.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write() -> None:
        try:
            with open(fifo, "wb") as handle:
                handle.write(payload)
        except BrokenPipeError:  # the reader stopped at its limit
            pass

    threading.Thread(target=write, daemon=True).start()
    return fifo


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_small_inputs_read_from_a_pipe_up_to_their_limit_and_never_from_a_device(tmp_path: Path) -> None:
    """A config, a steps file or a key file from /dev/zero passed the size check (a device's size is 0) and was read
    until the machine killed the process; `train <(yes "a: b")` read for ever. A pipe (process substitution, the way
    to pass a secret without a file) is read up to the limit; a device is refused in one line."""
    from medanomaly.config import read_yaml
    from medanomaly.errors import ConfigError
    from medanomaly.preprocess.pipeline import load_steps
    from medanomaly.privacy.pseudonym import load_key

    with pytest.raises(InputError, match="not a regular file .* where a key file is needed"):
        load_key("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file .* where a YAML file is needed"):
        read_yaml("/dev/zero")
    with pytest.raises(JsonLimitError, match="not a regular file"):
        read_json("/dev/zero")
    assert load_key(_pipe_writing(tmp_path / "a", b"  a-secret-of-32-bytes-0123456789 \n")) == (
        b"a-secret-of-32-bytes-0123456789")
    assert load_steps(_pipe_writing(tmp_path / "b", b"- {name: clip, low: 0, high: 1}\n")) == [
        {"name": "clip", "low": 0, "high": 1}]
    with pytest.raises(ConfigError, match="over the 1,048,576-byte limit for a YAML file"):
        read_yaml(_pipe_writing(tmp_path / "c", b"a: b\n" * 300_000))
