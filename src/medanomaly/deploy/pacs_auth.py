"""Credentials for a PACS's DICOMweb service, read from the environment: never from the command line (``ps`` shows
every process's arguments to every user), never written to a log, an error or a file.

=================================  ==========================================================================
``MEDANOMALY_PACS_TOKEN``           a bearer token (``Authorization: Bearer ...``): a cloud PACS's OAuth2 access
                                    token (Google Cloud Healthcare, Azure DICOM service), a proxy's API token
``MEDANOMALY_PACS_USER``,           HTTP Basic (RFC 7617, UTF-8): Orthanc's ``RegisteredUsers``, dcm4chee or
``MEDANOMALY_PACS_PASSWORD``        any PACS behind a proxy that asks for a user and a password
=================================  ==========================================================================

Example:
    >>> auth = PacsAuth.from_env({"MEDANOMALY_PACS_USER": "reader", "MEDANOMALY_PACS_PASSWORD": "s3cret"})
    >>> auth, str(auth)
    (PacsAuth(HTTP Basic), 'HTTP Basic')
    >>> PacsAuth.from_env({}) is None
    True
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from medanomaly.errors import InputError

TOKEN_ENV, USER_ENV, PASSWORD_ENV = "MEDANOMALY_PACS_TOKEN", "MEDANOMALY_PACS_USER", "MEDANOMALY_PACS_PASSWORD"
#: What a refusal for want of credentials says (HTTP 401 / 403).
CREDENTIALS_HINT = f"give credentials in the environment: {USER_ENV} and {PASSWORD_ENV}, or {TOKEN_ENV}"


@dataclass(frozen=True, eq=False)
class PacsAuth:
    """HTTP Basic (``user``, ``password``) or a bearer ``token``; its repr and str never show the secret."""

    user: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PacsAuth | None:
        """The credentials the environment gives (see the module docstring), or None when it gives none.

        Raises:
            InputError: a user without a password (or the reverse), a token and a user together, or a value an HTTP
                header cannot carry (a line break: it would end the header and start another).
        """
        token, user, password = (env.get(name) or None for name in (TOKEN_ENV, USER_ENV, PASSWORD_ENV))
        if token and (user or password):
            raise InputError(f"set either {TOKEN_ENV} or {USER_ENV} and {PASSWORD_ENV}, not both")
        if bool(user) != bool(password):
            raise InputError(f"{USER_ENV} and {PASSWORD_ENV} go together: one of them is not set")
        for name, value in ((TOKEN_ENV, token), (USER_ENV, user), (PASSWORD_ENV, password)):
            if value is not None and not value.isprintable():
                raise InputError(f"{name} holds a line break or a control character, which no HTTP header carries")
        if token and (not token.isascii() or any(c.isspace() for c in token)):
            raise InputError(f"{TOKEN_ENV} holds spaces or characters other than ASCII: not a bearer token")
        if user and ":" in user:
            raise InputError(f"{USER_ENV} holds a colon, which HTTP Basic uses between the user and the password")
        if token:
            return cls(token=token)
        return cls(user=user, password=password) if user else None

    def apply(self, session: Any) -> None:
        """Make every request of a ``requests.Session`` carry these credentials (requests drops them on a
        redirect to another host)."""
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        else:  # bytes: requests would encode a str as Latin-1 and fail on other characters; RFC 7617 allows UTF-8
            session.auth = (str(self.user).encode(), str(self.password).encode())

    def __str__(self) -> str:
        return "bearer token" if self.token else "HTTP Basic"

    def __repr__(self) -> str:
        return f"PacsAuth({self})"


def cleartext_warning(url: str, auth: PacsAuth | None) -> str | None:
    """A warning when credentials would cross a network unencrypted (``http://`` to a host that is not this
    machine), else None: a password or token sent so can be read by anyone on the way."""
    parts = urlsplit(url)
    if auth is None or parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return None
    return (f"warning: the PACS credentials ({auth}) go to {parts.hostname} without encryption (http://): use an "
            "https:// URL, or a TLS proxy in front of the PACS")  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
