"""Keyed pseudonyms, per-patient date shifts and the encrypted re-identification lookup.

Everything here is derived with HMAC-SHA256 from one project secret (the *key*), so the same
patient gets the same pseudonym and the same date shift on every run and every machine that holds
the key, and nobody without the key can recompute or invert them. The key comes from the
environment variable ``MEDANOMALY_DEID_KEY`` or from a key file; it is never logged, never written
to the audit and never stored in an output file.

Example:
    >>> key = b"a-project-secret-of-16+-bytes"
    >>> pseudonym(key, "12345") == pseudonym(key, "12345")
    True
    >>> pseudonym(key, "12345").startswith("ANON")
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.jsonio import FileLimitError, atomic_write, read_bytes_limited

#: Environment variable holding the project secret.
KEY_ENV = "MEDANOMALY_DEID_KEY"
#: Shortest secret accepted (bytes): a shorter one can be brute-forced from the pseudonyms.
MIN_KEY_BYTES = 16
#: Date shifts lie in [-MAX_SHIFT_DAYS, -1]: dates move into the past by up to ten years.
MAX_SHIFT_DAYS = 3650


#: A key file is a secret of a few dozen bytes; one larger than this is not a key file.
MAX_KEY_FILE_BYTES = 64 << 10


def load_key(key_file: str | Path | None = None, env: dict[str, str] | None = None) -> bytes:
    """The project secret: from ``key_file`` if given, else from ``$MEDANOMALY_DEID_KEY``.

    Args:
        key_file: a file whose content (surrounding whitespace stripped) is the secret.
        env: environment to read (default ``os.environ``; tests pass their own).

    Raises:
        InputError: no key anywhere, an unreadable key file, or a key shorter than 16 bytes.
            The message never contains the key.
    """
    environ = os.environ if env is None else env
    if key_file is not None:
        path = Path(key_file)
        try:
            raw = read_bytes_limited(path, MAX_KEY_FILE_BYTES, "a key file").strip()
        except FileLimitError as exc:  # /dev/zero as the key file read until the machine killed the process
            raise InputError(str(exc), path) from None
        except OSError as exc:
            raise InputError(f"cannot read the key file ({exc.strerror or 'unreadable'})", path) from None
        source = "key file"
    elif environ.get(KEY_ENV):
        raw = environ[KEY_ENV].strip().encode("utf-8")
        source = KEY_ENV
    else:
        raise InputError(
            f"no de-identification key: set the environment variable {KEY_ENV} "
            "or pass --key-file FILE (a secret of at least 16 bytes, kept outside the data)"
        )
    if len(raw) < MIN_KEY_BYTES:
        raise InputError(f"the de-identification key from the {source} is shorter than {MIN_KEY_BYTES} bytes")
    return raw


def keyed_digest(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under ``key``, domain-separated by ``purpose`` (32 bytes)."""
    # surrogateescape: a file name that is not UTF-8 (read by Python as lone surrogates) still
    # gets its own id instead of an error; valid text encodes exactly as UTF-8.
    message = purpose.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).digest()


def pseudonym(key: bytes, identity: str, prefix: str = "ANON") -> str:
    """A stable pseudonym for a patient identity: ``prefix`` + 12 base32 characters (60 bits).

    Fits PatientID (LO) and PatientName (PN); uppercase letters and digits only.
    """
    digest = keyed_digest(key, "pseudonym", identity.strip())
    return prefix + base64.b32encode(digest).decode("ascii")[:12]


def date_shift_days(key: bytes, identity: str) -> int:
    """The per-patient date shift in days, in ``[-MAX_SHIFT_DAYS, -1]`` (always into the past).

    Every date of one patient moves by the same number of days, so intervals between studies are
    kept (Retain Longitudinal Temporal Information, Modified Dates Option).
    """
    digest = keyed_digest(key, "date-shift", identity.strip())
    return -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)


def key_id(key: bytes) -> str:
    """A keyed id of the project key itself (12 hex digits): tells two keys apart, reveals nothing."""
    return keyed_digest(key, "key-id", "medanomaly").hex()[:12]


def file_id(key: bytes, relative_path: str) -> str:
    """A keyed id for an input file (16 hex digits), used in the audit instead of its path.

    Input paths often contain patient names; the holder of the key can match an id to a path with
    this same function, nobody else can.
    """
    return keyed_digest(key, "file", relative_path).hex()[:16]


# ----------------------------------------------------------------------- encrypted lookup file
def _fernet(key: bytes):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"medanomaly-deid-lookup").derive(key)
    return Fernet(base64.urlsafe_b64encode(derived))


def read_lookup(path: str | Path, key: bytes) -> dict[str, dict[str, str]]:
    """Decrypt a lookup file: ``{pseudonym: {"patient_id": ..., "patient_name": ...}}``.

    Raises:
        InputError: the file cannot be decrypted with this key (wrong key or tampered file).
    """
    from cryptography.fernet import InvalidToken

    path = Path(path)
    try:
        plain = _fernet(key).decrypt(path.read_bytes())
    except InvalidToken:
        raise InputError("lookup file cannot be decrypted with this key (wrong key or altered file)", path) from None
    return json.loads(plain.decode("utf-8"))


def write_lookup(path: str | Path, key: bytes, entries: dict[str, dict[str, str]]) -> None:
    """Merge ``entries`` into the encrypted lookup file at ``path`` (created if missing), atomically.

    The file is encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA256) with a key derived
    from the project secret by HKDF, so only a holder of the secret can re-identify.
    """
    path = Path(path)
    merged = read_lookup(path, key) if path.is_file() else {}
    merged.update(entries)
    token = _fernet(key).encrypt(json.dumps(merged, ensure_ascii=False, sort_keys=True).encode("utf-8"))
    atomic_write(path, lambda fh: fh.write(token), private=True)


def reidentify(path: str | Path, key: bytes, pseudo: str) -> dict[str, str]:
    """The original identity behind a pseudonym, for an authorised holder of the key and lookup file.

    Raises:
        InputError: the pseudonym is not in the lookup file.
    """
    table = read_lookup(path, key)
    if pseudo not in table:
        raise InputError("pseudonym not found in the lookup file", path)
    return table[pseudo]
