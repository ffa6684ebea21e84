"""Detached NRRD / MetaImage data: a header may only name data files inside its own folder
(a few header lines used to read any file the process could open as pixels: `/etc/passwd`, `../x.raw`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read

NRRD = "NRRD0004\ntype: short\ndimension: {dim}\nsizes: 8 8{extra}\nencoding: raw\nendian: little\ndata file: {ref}\n"
META = "ObjectType = Image\nNDims = 2\nDimSize = 8 8\nElementType = MET_SHORT\nElementDataFile = {ref}\n"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """``tmp/study/`` with a raw 8 x 8 slice beside it and one outside it (``tmp/secret.raw``)."""
    (tmp_path / "secret.raw").write_bytes(np.arange(64, dtype="<i2").tobytes())
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "slice1.raw").write_bytes(np.full(64, 7, dtype="<i2").tobytes())
    return folder


@pytest.mark.parametrize(
    ("name", "text", "shown"),
    [
        ("abs.nhdr", NRRD.format(dim=2, extra="", ref="{secret}"), "{secret}"),
        ("up.nrrd", NRRD.format(dim=2, extra="", ref="../secret.raw") + "\n", "../secret.raw"),
        ("list.nhdr", NRRD.format(dim=3, extra=" 2", ref="LIST") + "slice1.raw\n../secret.raw\n", "../secret.raw"),
        ("pattern.nhdr", NRRD.format(dim=3, extra=" 2", ref="../secr%d.raw 1 2 1"), "../secr1.raw"),
        ("abs.mhd", META.format(ref="{secret}"), "{secret}"),
        ("link.nhdr", NRRD.format(dim=2, extra="", ref="link.raw"), "link.raw"),
    ],
)
def test_header_naming_data_outside_its_folder_is_refused(study: Path, name: str, text: str, shown: str) -> None:
    secret = str(study.parent / "secret.raw")
    (study / "link.raw").symlink_to(secret)
    (study / name).write_text(text.format(secret=secret))
    shown = shown.format(secret=secret)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."  # a long path is cut to keep the line short
    reason = f"{name}: header names a data file outside its folder ('{shown}')"
    with pytest.raises(InputError, match=re.escape(reason)):
        read(study / name)


def test_data_beside_the_header_still_reads(study: Path) -> None:
    (study / "pair.nhdr").write_text(NRRD.format(dim=2, extra="", ref="slice1.raw"))
    (study / "pair.mhd").write_text(META.format(ref="slice1.raw"))
    for name in ("pair.nhdr", "pair.mhd"):
        assert np.all(np.asarray(read(study / name).array) == 7)


def test_a_metaimage_header_without_its_data_key_is_one_line(study: Path, capfd) -> None:
    """MetaIO printed four lines of its own ('ElementDataFile required and not defined.', 'MetaObject: Read:
    MET_Read Failed', ...) before our error, which said 'No such file or directory' of a file that exists."""
    (study / "nokey.mhd").write_text(META.replace("ElementDataFile = {ref}\n", ""))
    with pytest.raises(InputError, match=r"nokey.mhd: not a readable metaimage image \(ElementDataFile required and "
                                         r"not defined\)$"):  # fmt: skip
        read(study / "nokey.mhd")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("name", "text", "missing"),
    [
        ("gone.nhdr", NRRD.format(dim=2, extra="", ref="gone.raw"), "gone.raw"),
        ("gone.mhd", META.format(ref="gone.raw"), "gone.raw"),
        ("list.mhd", META.replace("NDims = 2\nDimSize = 8 8", "NDims = 3\nDimSize = 8 8 2").format(ref="LIST")
         + "slice1.raw\nslice2.raw\n", "slice2.raw"),
        ("pattern.nhdr", NRRD.format(dim=3, extra=" 2", ref="slice%d.raw 1 2 1"), "slice2.raw"),
    ],
)
def test_a_data_file_that_is_not_there_is_named(study: Path, name: str, text: str, missing: str) -> None:
    """MetaIO said "Cannot open data file", or "cannot open slice" for a LIST or a numbered pattern, naming none."""
    (study / name).write_text(text)
    with pytest.raises(InputError, match=re.escape(f"{name}: header names a data file that is not beside it "
                                                   f"('{missing}')")):  # fmt: skip
        read(study / name)
    (study / missing).write_bytes(np.full(64, 7, dtype="<i2").tobytes())  # once it is there, it reads
    assert np.all(np.asarray(read(study / name).array) == 7)
