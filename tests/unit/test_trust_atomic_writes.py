"""Every file medanomaly writes appears whole or not at all: a write that fails half-way (full disk, Ctrl-C, a killed
process) leaves an earlier file of that name as it was. Writers go through ``io.staged.write_staged``,
``jsonio.write_text_atomic`` / ``write_json`` or ``deploy.atomic``; this guard finds a direct write that slipped in."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "medanomaly"
DIRECT_WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\(|WriteImage\(|WriteTransform\(|\.save_as\(|"
                          r"np\.save\(|savez|\.open\(\"w|[^.]open\([^)]*\"w")  # fmt: skip
#: A direct write is fine into a temporary name that is then renamed, a fresh folder that is renamed whole, or a
#: buffer: the line names it so.
STAGED_TARGET = re.compile(r"tmp|partial|probe|staged|buf\b|buf,|fh\b|handle|os\.fdopen|>>>")
#: Files that write into a folder of their own that is renamed whole, or that write broken files on purpose.
WHOLE_FOLDER = {
    "deploy/demo_archive.py": "builds a demo archive with corrupt files on purpose, in a fresh folder",
    "deploy/export_anomaly.py": "writes into the package's temporary folder, renamed whole",
    "deploy/service/ingest.py": "stores an upload into the job's fresh folder under service-made names",
    "synth/mammo_cohort.py": "writes the phantom cohort into a temporary folder that data.phantom renames whole",
}


def test_no_direct_write_outside_the_all_or_nothing_helpers():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("web/") or rel in WHOLE_FOLDER or rel in ("io/staged.py", "jsonio.py", "deploy/atomic.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if DIRECT_WRITE.search(line) and not STAGED_TARGET.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "write these through io.staged.write_staged or jsonio.write_text_atomic:\n" + "\n".join(found)


def test_an_interrupted_text_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    """Ctrl-C between writing the temporary file and moving it into place left ``.name.XXXX`` beside the target."""
    import os

    import pytest

    from medanomaly import jsonio

    target = tmp_path / "report.html"
    target.write_text("old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jsonio.write_text_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
