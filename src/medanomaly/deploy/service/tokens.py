"""Bearer tokens: a new token is printed once; the token file keeps only its SHA-256 hash.

The file is JSON ``{"tokens": [{"id", "sha256", "models", "created"[, "all_studies"]}]}`` written atomically with
mode 0600. ``models`` is ``["*"]`` (every model) or a list of model names; a token reads the studies uploaded with it
only, unless ``all_studies`` (:meth:`TokenEntry.sees`). A presented token is
hashed and compared with :func:`hmac.compare_digest` against every stored hash.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tokens.json"
    >>> token = new_token(path, models=["lung"])
    >>> TokenStore(path).check(token).allows("lung"), TokenStore(path).check("nope")
    (True, None)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.jsonio import atomic_write, read_json

__all__ = ["TokenEntry", "TokenStore", "new_token", "hash_token", "list_tokens", "revoke_token"]


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (tokens are 256-bit random, so a plain hash is enough)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One stored token: its id (not secret), hash, the models it may use, and whether it sees every study of them
    (``all_studies``: a reading room's viewer) or only those uploaded with it (the default)."""

    id: str
    sha256: str
    models: tuple[str, ...]
    all_studies: bool = False

    def allows(self, model: str) -> bool:
        """True when this token may use ``model``."""
        return "*" in self.models or model in self.models

    def sees(self, job: dict) -> bool:
        """True when this token may read ``job`` (a job row): its model is allowed, and the job was uploaded with
        this token, or the token sees every study (the only way to a job that predates owners: no ``token`` recorded,
        it could be any client's)."""
        owner = job.get("token")
        return self.allows(str(job["model"])) and (self.all_studies or (owner is not None and owner == self.id))


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        doc = read_json(path)
        entries = list(doc["tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("not a readable token file (expected JSON with a 'tokens' list)", path) from None
    for number, entry in enumerate(entries, start=1):
        _check_entry(entry, number, path)
    return entries


def _check_entry(entry: object, number: int, path: Path) -> None:
    """A stored token: a mapping with a 64-hex-digit ``sha256`` and ``models`` a list of names (a string such as
    "lung" used to become the models 'l', 'u', 'n', 'g'); a missing hash was a KeyError traceback."""
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    models = entry.get("models", ["*"]) if isinstance(entry, dict) else None
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise InputError(f"token {number}: 'sha256' must be 64 hex digits (the file is written by `medanomaly "
                         "token new`)", path)  # fmt: skip
    if not (isinstance(models, list) and all(isinstance(m, str) and m for m in models)):
        raise InputError(f"token {number}: 'models' must be a list of model names", path)
    if not isinstance(entry.get("all_studies", False), bool):
        raise InputError(f"token {number}: 'all_studies' must be true or false", path)


def new_token(path: str | Path, models: list[str] | None = None, all_studies: bool = False) -> str:
    """Create a token, store its hash in ``path`` (created 0600), and return the token itself.

    Args:
        path: the token file (JSON).
        models: model names the token may use; None or empty = every model.
        all_studies: the token sees every study of its models, not only those uploaded with it.

    Returns:
        The token: shown once, never stored (its id, for :func:`revoke_token`, is the file's last entry's).
    """
    path = Path(path)
    entries = _read(path)
    token = secrets.token_urlsafe(32)
    taken = {str(e.get("id")) for e in entries}
    token_id = next(i for i in iter(lambda: secrets.token_hex(4), None) if i not in taken)  # ids name one token
    entries.append({"id": token_id, "sha256": hash_token(token), "models": list(models or ["*"]),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **({"all_studies": True} if all_studies else {})})  # fmt: skip
    atomic_write(path, lambda fh: fh.write(json.dumps({"tokens": entries}, indent=2).encode()), private=True)
    return token


def list_tokens(path: str | Path) -> list[dict[str, object]]:
    """Each stored token's ``id``, ``models`` and ``created`` (no hash: nothing an attacker could test guesses
    against), in the file's order; a missing file has none."""
    return [{"id": str(e.get("id", "?")), "models": list(e.get("models") or ["*"]), "created": e.get("created", ""),
             "all_studies": bool(e.get("all_studies", False))} for e in _read(Path(path))]  # fmt: skip


def revoke_token(path: str | Path, token_id: str) -> None:
    """Remove the token ``token_id`` from the file (atomically, 0600): a running service refuses it from its next
    request (the file is re-read when it changes).

    Raises:
        InputError: no token of that id (the ids are listed by :func:`list_tokens`).
    """
    path = Path(path)
    entries = _read(path)
    kept = [e for e in entries if str(e.get("id")) != token_id]
    if len(kept) == len(entries):
        raise InputError(f"no token with id {token_id!r} (see `medanomaly token list --tokens FILE`)", path)
    atomic_write(path, lambda fh: fh.write(json.dumps({"tokens": kept}, indent=2).encode()), private=True)


class TokenStore:
    """The token file, re-read when it changes (a token added while serving works at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._entries: tuple[TokenEntry, ...] = ()
        self._reload()

    def _reload(self) -> None:
        """Read the file again when it changed. While serving (tokens already loaded), a file edited into an
        invalid state keeps the tokens loaded before and logs one line; at start it is an InputError."""
        mtime = self.path.stat().st_mtime if self.path.exists() else None
        if mtime == self._mtime and self._entries:
            return
        try:
            entries = _read(self.path)
        except InputError as exc:
            if not self._entries:
                raise
            logging.getLogger(__name__).warning("%s; keeping the %d token(s) read before", exc, len(self._entries))
            self._mtime = mtime
            return
        self._entries = tuple(TokenEntry(str(e.get("id", "?")), e["sha256"], tuple(e.get("models") or ["*"]),
                                         bool(e.get("all_studies", False))) for e in entries)  # fmt: skip
        self._mtime = mtime

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, token: str | None) -> TokenEntry | None:
        """The entry of a valid token, or None. Every stored hash is compared (constant time each)."""
        if not token:
            return None
        self._reload()
        digest = hash_token(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found
