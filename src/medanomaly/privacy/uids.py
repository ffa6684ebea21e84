"""Consistent keyed UID remapping and the file meta fix.

A UID is mapped to ``2.25.<decimal of the first 128 bits of HMAC-SHA256(key, uid)>``: the same
input UID always gives the same output UID under one key (so series, studies and references stay
linked across files, runs and machines), different keys give unrelated UIDs, and the result is a
valid UID of at most 44 characters (PS3.5 9.1: <= 64, digits and dots, no leading zeros).

Registered UIDs (SOP classes, transfer syntaxes, coding schemes, ...) identify no one and are kept.

Example:
    >>> uid = remap_uid(b"0123456789abcdef", "1.2.3.4")
    >>> uid.startswith("2.25.") and len(uid) <= 64
    True
"""

from __future__ import annotations

from functools import lru_cache

from medanomaly.privacy.pseudonym import keyed_digest

#: Our implementation identity in the file meta (pydicom's root, as pydicom writes it).
IMPLEMENTATION_VERSION_NAME = "MEDANOMALY_DEID"


@lru_cache(maxsize=1)
def _registered() -> frozenset[str]:
    from pydicom.uid import UID_dictionary

    return frozenset(UID_dictionary)


def is_registered_uid(uid: str) -> bool:
    """True for UIDs of the DICOM registry (PS3.6 Annex A): SOP classes, transfer syntaxes..."""
    return uid.strip() in _registered()


def remap_uid(key: bytes, uid: str) -> str:
    """The keyed replacement of ``uid`` (registered UIDs are returned unchanged)."""
    uid = uid.strip().rstrip("\x00")
    if not uid or is_registered_uid(uid):
        return uid
    return "2.25." + str(int.from_bytes(keyed_digest(key, "uid", uid)[:16], "big"))


def is_valid_uid(uid: str) -> bool:
    """PS3.5 9.1 syntax: at most 64 characters, dot-separated numbers without leading zeros."""
    if not uid or len(uid) > 64:
        return False
    for part in uid.split("."):
        if not part.isdigit() or not part.isascii() or (len(part) > 1 and part[0] == "0"):
            return False
    return True


def fix_file_meta(ds, transfer_syntax: str | None = None) -> None:
    """Rewrite the file meta of a de-identified dataset (in place).

    The file meta is built anew: Media Storage SOP Class/Instance UIDs follow the (remapped)
    dataset, our implementation UID and version replace the creator's, and nothing else of the old
    meta survives (source/sending/receiving AE titles and private information can name a site).
    The 128-byte preamble (free for applications to fill, e.g. with a TIFF header naming the
    patient) is zeroed.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    old = getattr(ds, "file_meta", None)
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    tsyntax = transfer_syntax or (old.get("TransferSyntaxUID") if old is not None else None)
    meta.TransferSyntaxUID = tsyntax or "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
