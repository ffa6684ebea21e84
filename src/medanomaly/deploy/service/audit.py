"""The service's audit trail: one JSON line per API request in ``DATA/audit.jsonl`` (0600, appended): when, from
which address, which token (its id, never the token), what (method and path, no query), and the answer's status.

Who read or deleted which study was nowhere (the access log, when uvicorn writes one, names no token); an audit
trail of access to patient data is what a hospital's security review asks of a clinical service (HIPAA's audit
controls, 45 CFR 164.312(b)). Refused requests (401, 403, 413) are recorded too, with ``"token": "-"`` when no
valid token came, and a request dropped before any answer (a stalled upload) with ``"status": null``. Paths hold job and study ids (random), never a file name; the trail holds no header value.

Example:
    >>> import json, tempfile, pathlib
    >>> trail = AuditTrail(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> trail.record({"method": "GET", "path": "/v1/jobs", "status": 200, "token": "1a2b3c4d", "client": "10.0.0.7"})
    >>> json.loads(trail.path.read_text())["token"]
    '1a2b3c4d'
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from medanomaly.deploy.service.headers import route_path

__all__ = ["AuditLog", "AuditTrail", "AUDIT_FILE"]

AUDIT_FILE = "audit.jsonl"
log = logging.getLogger("medanomaly.service")


class AuditTrail:
    """Append-only JSON lines, one per record, written whole (a single ``write`` of an ``O_APPEND`` file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._failed = False

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` with its time (UTC, ISO 8601); a write that fails is logged once per outage, and the
        request it records is answered all the same."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}) + "\n"
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            self._failed = False
        except OSError as exc:
            if not self._failed:
                log.warning("audit trail not written (%s): requests go on unrecorded", exc.strerror or exc)
            self._failed = True


class AuditLog:
    """Wrap an ASGI app so that every request under ``/v1/`` is recorded in an :class:`AuditTrail`, with the id of
    the token :func:`~medanomaly.deploy.service.app.bearer` accepted (``scope["state"]["token_id"]``)."""

    def __init__(self, app: Any, trail: AuditTrail) -> None:
        self.app, self.trail = app, trail

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        status = [0]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-", 0)
            self.trail.record({"client": str(client[0]), "token": str((scope.get("state") or {}).get("token_id", "-")),
                               "method": scope.get("method", ""), "path": route_path(scope),
                               "status": status[0] or None})  # fmt: skip  # None: no answer was sent (dropped)
