"""Every file medanomaly writes appears whole or not at all: a write that fails half-way (full disk, Ctrl-C, a killed
process) leaves an earlier file of that name as it was. Writers go through ``io.staged.write_staged``,
``jsonio.atomic_write`` / ``write_text_atomic`` / ``write_json`` or ``deploy.atomic``; these guards find a direct write
that slipped in, and a hand-made temporary-file-and-rename (each one had its own flaws: no fsync, the temporary file
left behind when the write failed)."""

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


#: Renames outside the helpers, each for a reason the helpers do not cover.
OWN_RENAME = {
    "io/staged.py": "the helper for writers that need a path",
    "jsonio.py": "the helper for writers that take a file handle",
    "deploy/export.py": "moves a whole package folder into place",
    "data/lesion_store.py": "moves a whole store folder into place",
    "data/phantom.py": "moves a whole phantom cohort folder into place",
    "data/sources.py": "moves a whole extracted data folder into place",
    "deploy/service/ingest.py": "names an upload's files inside the job's own fresh folder (nothing is replaced)",
    "privacy/batch.py": "deid's temporary files are named by process, so a rerun can clean those of a killed run",
    "privacy/deid.py": "moves a worker's finished file into place (named by process, as above)",
}


def test_no_hand_made_rename_outside_the_helpers():
    found = [
        f"{path.relative_to(SRC).as_posix()}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).as_posix() not in OWN_RENAME and not path.relative_to(SRC).as_posix().startswith("web/")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\((tmp|partial)|(tmp|partial)\w*\.replace\(", line)
    ]
    assert found == [], "write these through jsonio.atomic_write or io.staged.write_staged:\n" + "\n".join(found)


def test_a_failed_handle_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    from medanomaly.jsonio import atomic_write

    target = tmp_path / "lookup.bin"
    target.write_bytes(b"old")

    def failing(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    import pytest

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["lookup.bin"]


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


def test_outputs_get_the_usual_permissions_and_secrets_stay_private(tmp_path):
    """The temporary file behind every atomic write is 0600, and it kept that mode: findings.json, model.json,
    metrics.json were unreadable by the rest of a team sharing a run folder while the images beside them were not."""
    import os
    import stat

    from medanomaly.deploy.atomic import atomic_write_json
    from medanomaly.deploy.service.tokens import new_token
    from medanomaly.jsonio import write_json
    from medanomaly.privacy.pseudonym import write_lookup

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)
    try:
        assert mode(write_json(tmp_path / "findings.json", {})) == 0o644
        assert mode(atomic_write_json(tmp_path / "results.json", {})) == 0o644
        new_token(tmp_path / "tokens.json")
        write_lookup(tmp_path / "lookup.bin", b"k" * 32, {"ANON1": {"PatientName": "x"}})
        assert mode(tmp_path / "tokens.json") == 0o600 and mode(tmp_path / "lookup.bin") == 0o600
        os.umask(0o077)
        assert mode(write_json(tmp_path / "findings.json", {})) == 0o600
    finally:
        os.umask(old)


def test_text_holding_a_file_name_that_is_not_utf8_is_written_with_its_escape(tmp_path):
    """A 2D anomaly run's report lists the training images it skipped; one named with byte 0xFF (a lone surrogate
    to Python) made ``evaluate`` end in a UnicodeEncodeError traceback after the work."""
    import os

    from medanomaly.jsonio import write_text_atomic

    name = os.fsdecode(b"mni\xff.png")
    path = write_text_atomic(tmp_path / "report.html", f"<p>skipped {name}</p>")
    assert path.read_bytes() == b"<p>skipped mni\\udcff.png</p>"
