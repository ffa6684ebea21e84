"""Fixtures for the privacy tests: a project key, pydicom's charset files, the real deid-data files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

KEY = b"test-project-secret-0123456789"

#: Charset files of pydicom with pixel data: patient names in Latin-1, Arabic, Greek, Hebrew,
#: Cyrillic, Japanese (ISO 2022), Korean, Chinese (GB18030, UTF-8).
CHARSET_IMAGES = (
    "chrArab.dcm", "chrFren.dcm", "chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm", "chrH32.dcm",
    "chrHbrw.dcm", "chrI2.dcm", "chrRuss.dcm", "chrX1.dcm", "chrX2.dcm",
)  # fmt: skip


def charset_file(name: str) -> Path:
    """A pydicom charset test file. ``real_data("pydicom/...")`` does not resolve these yet
    (pydicom keeps them apart from its test files), so we ask pydicom directly: no skip."""
    from pydicom.data import get_charset_files

    found = get_charset_files(name)
    if not found:
        raise FileNotFoundError(f"pydicom charset file {name} missing; run `make setup`")
    return Path(found[0])


@pytest.fixture(scope="session")
def key() -> bytes:
    return KEY


def encoded_needles(value: str, charsets) -> list[bytes]:
    """Byte strings under which ``value`` could appear in a file: its encoding in the file's
    character set (whole and per name component, ISO 2022 escapes split off) and UTF-8."""
    from pydicom.charset import convert_encodings, encode_string

    terms = [charsets] if isinstance(charsets, str) else list(charsets or ["ISO_IR 6"])
    encodings = convert_encodings(terms)
    needles: set[bytes] = set()
    parts = [value, *[p for p in re.split(r"[\^=]", value) if p]]
    for part in parts:
        for raw in (encode_string(part, encodings), part.encode("utf-8", "ignore")):
            for chunk in re.split(rb"\x1b[\x20-\x2f]*[\x30-\x7e]", raw):
                chunk = chunk.strip(b" ")
                if len(chunk) >= 4 or (len(chunk) >= 2 and any(b > 0x7F for b in chunk)):
                    needles.add(chunk)
    return sorted(needles, key=len, reverse=True)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to prove the input is never modified)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def charset():
    """``charset(name) -> Path`` of a pydicom charset file."""
    return charset_file


@pytest.fixture(scope="session")
def needles():
    """``needles(value, charsets) -> [bytes]`` (see :func:`encoded_needles`)."""
    return encoded_needles


@pytest.fixture(scope="session")
def digest():
    """``digest(folder) -> {relpath: sha256}``."""
    return tree_digest
