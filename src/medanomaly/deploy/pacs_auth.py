"""Credentials for a PACS's DICOMweb service, read from the environment: never from the command line (``ps`` shows
every process's arguments to every user), never written to a log, an error or a file.

=================================  ==========================================================================
``MEDANOMALY_PACS_TOKEN``           a bearer token (``Authorization: Bearer ...``): a cloud PACS's OAuth2 access
                                    token (Google Cloud Healthcare, Azure DICOM service), a proxy's API token
``MEDANOMALY_PACS_TOKEN_COMMAND``   a command that prints a bearer token (``gcloud auth print-access-token``),
                                    run (without a shell) at the start and again when the PACS answers 401: an
                                    access token expires (one hour for Google's), a watch runs for days
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
import shlex
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from medanomaly.errors import InputError

TOKEN_ENV, USER_ENV, PASSWORD_ENV = "MEDANOMALY_PACS_TOKEN", "MEDANOMALY_PACS_USER", "MEDANOMALY_PACS_PASSWORD"
TOKEN_COMMAND_ENV = "MEDANOMALY_PACS_TOKEN_COMMAND"
#: What a refusal for want of credentials says (HTTP 401 / 403).
CREDENTIALS_HINT = (f"give credentials in the environment: {USER_ENV} and {PASSWORD_ENV}, {TOKEN_ENV}, or "
                    f"{TOKEN_COMMAND_ENV}")  # fmt: skip
#: Seconds a token command may take, and the most it may print (bytes): a token is a few KB at most.
TOKEN_COMMAND_TIMEOUT_S, TOKEN_COMMAND_MAX_BYTES = 60.0, 64 * 1024


def check_token(token: str, source: str) -> str:
    """``token`` when an HTTP header can carry it as a bearer token, else one InputError naming ``source`` (never the
    token)."""
    if not token.isprintable():
        raise InputError(f"{source} holds a line break or a control character, which no HTTP header carries")
    if not token.isascii() or any(c.isspace() for c in token):
        raise InputError(f"{source} holds spaces or characters other than ASCII: not a bearer token")
    return token


def run_token_command(argv: tuple[str, ...]) -> str:
    """The bearer token a command prints on standard output (stripped), run without a shell within
    :data:`TOKEN_COMMAND_TIMEOUT_S`; a command that cannot run, fails, takes too long or prints no token is one
    InputError that quotes neither its output nor its error text (either may hold the secret)."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InputError(f"{TOKEN_COMMAND_ENV}: cannot run {argv[0]!r} (not found)") from None
    except OSError as exc:
        raise InputError(f"{TOKEN_COMMAND_ENV}: cannot run {argv[0]!r} ({exc.strerror})") from None
    output = _bounded_output(proc, argv[0])
    if proc.returncode != 0:
        raise InputError(f"{TOKEN_COMMAND_ENV}: {argv[0]!r} failed (exit {proc.returncode})")
    token = output.decode("utf-8", "replace").strip()
    if not token:
        raise InputError(f"{TOKEN_COMMAND_ENV}: {argv[0]!r} printed no token")
    return check_token(token, f"the output of {TOKEN_COMMAND_ENV}")


def _bounded_output(proc: subprocess.Popen, name: str) -> bytes:
    """What ``proc`` prints, read up to :data:`TOKEN_COMMAND_MAX_BYTES` (more, or no end within
    :data:`TOKEN_COMMAND_TIMEOUT_S`, kills it: ``yes`` as the command had filled the memory for a minute)."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.read(TOKEN_COMMAND_MAX_BYTES + 1)), daemon=True)
    reader.start()
    reader.join(TOKEN_COMMAND_TIMEOUT_S)
    output = result[0] if result else b""
    if reader.is_alive() or len(output) > TOKEN_COMMAND_MAX_BYTES:
        proc.kill()
        proc.wait()
        what = "printed more than a token" if output else f"gave no token in {TOKEN_COMMAND_TIMEOUT_S:g} s"
        raise InputError(f"{TOKEN_COMMAND_ENV}: {name!r} {what}")
    try:
        proc.wait(TOKEN_COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # it closed its output but goes on
        proc.kill()
        proc.wait()
        raise InputError(f"{TOKEN_COMMAND_ENV}: {name!r} gave no token in {TOKEN_COMMAND_TIMEOUT_S:g} s") from None
    return output


class RefreshingBearer:
    """A ``requests`` auth that sends a bearer token from a command and, when the PACS answers 401, runs the command
    again and sends the request once more with the new token (as requests' digest auth re-sends)."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = argv
        self._lock = threading.Lock()
        self.token = run_token_command(argv)

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: Any, **kwargs: Any) -> Any:
        sent = response.request.headers.get("Authorization")
        if response.status_code != 401 or getattr(response.request, "refreshed", False):
            return response
        with self._lock:  # one refresh for requests that failed together
            if sent == f"Bearer {self.token}":
                self.token = run_token_command(self.argv)
        response.close()  # its body unread: a hostile PACS's 401 may be large
        again = response.request.copy()
        again.headers["Authorization"] = f"Bearer {self.token}"
        again.refreshed = True
        retried = response.connection.send(again, **kwargs)
        retried.history.append(response)
        retried.request = again
        return retried


@dataclass(frozen=True, eq=False)
class PacsAuth:
    """HTTP Basic (``user``, ``password``) or a bearer ``token``; its repr and str never show the secret."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    command: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PacsAuth | None:
        """The credentials the environment gives (see the module docstring), or None when it gives none.

        Raises:
            InputError: a user without a password (or the reverse), a token and a user together, or a value an HTTP
                header cannot carry (a line break: it would end the header and start another).
        """
        token, user, password, command = (env.get(name) or None
                                          for name in (TOKEN_ENV, USER_ENV, PASSWORD_ENV, TOKEN_COMMAND_ENV))  # fmt: skip
        if sum(bool(kind) for kind in (token, user or password, command)) > 1:
            raise InputError(f"set one of {TOKEN_ENV}, {TOKEN_COMMAND_ENV}, or {USER_ENV} and {PASSWORD_ENV}")
        if bool(user) != bool(password):
            raise InputError(f"{USER_ENV} and {PASSWORD_ENV} go together: one of them is not set")
        for name, value in ((USER_ENV, user), (PASSWORD_ENV, password)):
            if value is not None and not value.isprintable():
                raise InputError(f"{name} holds a line break or a control character, which no HTTP header carries")
        if token:
            check_token(token, TOKEN_ENV)
        if command:
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise InputError(f"{TOKEN_COMMAND_ENV} is not a command line ({exc})") from None
            return cls(command=argv) if argv else None
        if user and ":" in user:
            raise InputError(f"{USER_ENV} holds a colon, which HTTP Basic uses between the user and the password")
        if token:
            return cls(token=token)
        return cls(user=user, password=password) if user else None

    def apply(self, session: Any) -> None:
        """Make every request of a ``requests.Session`` carry these credentials (requests drops them on a
        redirect to another host)."""
        if self.command:  # the token is fetched now: a command that fails is one line before any request
            session.auth = RefreshingBearer(self.command)
        elif self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        else:  # bytes: requests would encode a str as Latin-1 and fail on other characters; RFC 7617 allows UTF-8
            session.auth = (str(self.user).encode(), str(self.password).encode())

    def __str__(self) -> str:
        return "bearer token command" if self.command else "bearer token" if self.token else "HTTP Basic"

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
