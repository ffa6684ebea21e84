"""Deadlines on what a client owes the service, and a cap on open connections: ``medanomaly serve``'s HTTP protocol.

uvicorn's h11 protocol waits for a request's headers and body without end: a client that connects and sends nothing,
or half a request line (slowloris), holds its socket for as long as it likes, before any token is checked. 300 such
connections held a server under ``ulimit -n 256`` out of every request ("Too many open files" tracebacks in its log,
clients timing out). nginx and Apache close such clients (``client_header_timeout``, ``RequestReadTimeout``); this
protocol does the same inside the service, so it stays up without a proxy in front:

- **headers**: a request's headers arrive whole within ``header_s`` seconds of the connection (or, on a kept-alive
  connection, of the request's first byte); else the connection is closed.
- **body**: a request body that stops arriving for ``body_idle_s`` seconds is dropped (the app sees a disconnect: no
  job is made, the half-stored upload is removed); a body the service itself has paused reading is never timed out.
- **response**: a client that stops reading a response (its socket full: writing paused) for ``body_idle_s`` seconds
  is closed, so a slow reader does not hold a connection, its file and the response's task for ever.
- **connections**: at most ``max_connections`` are open at once; one more is closed as soon as it is accepted, so the
  ones already open keep their file descriptors. The open-file limit (``ulimit -n``) is raised to its hard limit and
  the cap kept under it with room for the service's own files and for one burst of accepts (asyncio accepts up to
  the listen backlog, :data:`BACKLOG`, before a close runs; uvicorn's default backlog is 2,048).
- **the log**: each kind of closed connection is logged once per :data:`LOG_EVERY_S` seconds with a count of the
  others (an attack of 300 connections wrote 300 lines).

Limits per client address belong to a reverse proxy: behind one, every client has the proxy's address.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BACKLOG", "ConnectionLimits", "default_max_connections", "guarded_protocol", "raise_open_file_limit"]

_log = logging.getLogger("medanomaly.service")
#: Listen backlog of the service's socket: connections the kernel queues, and asyncio accepts in one go.
BACKLOG = 128
#: File descriptors kept for the service's own files (job store, uploads, models, logs) under the open-file limit.
_RESERVED_FILES = 64
#: Seconds between two log lines about closed connections of one kind.
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds a client has for a request's headers and between the parts of its body; most open connections."""

    header_s: float = 15.0
    body_idle_s: float = 60.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if not (self.header_s > 0 and self.body_idle_s > 0 and self.max_connections >= 1):
            raise ValueError(f"connection limits must be positive, got {self}")


def raise_open_file_limit(most: int = 65_536) -> None:
    """Raise this process's open-file limit (``ulimit -n``) to its hard limit, at most ``most`` (left as it is when
    the system refuses)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = most if hard == resource.RLIM_INFINITY else min(hard, most)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass


def default_max_connections(limit: int = 1000) -> int:
    """``limit``, or fewer when the open-file limit (``ulimit -n``) leaves less room beside the service's own files and
    a burst of :data:`BACKLOG` accepts."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, soft - _RESERVED_FILES - BACKLOG))


class _ThrottledLog:
    """Warnings of one kind at most once per :data:`LOG_EVERY_S` seconds, each with the count held back before it."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held, self._last[kind] = self._held.pop(kind, 0), now
        _log.warning("%s%s", message, f" (and {held:,} more since the last such line)" if held else "")


_throttled = _ThrottledLog()


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with ``limits`` (pass it as ``uvicorn.run(..., http=...)``)."""
    return type("GuardedH11Protocol", (_Guarded,), {"limits": limits})


class _Guarded(H11Protocol):
    limits = ConnectionLimits()
    _timer: asyncio.TimerHandle | None = None
    _timing: str = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            _throttled.warning("full", f"closed a new connection: {self.limits.max_connections:,} are open, the "
                               "most allowed")  # fmt: skip
            transport.close()
            return
        self._arm("headers", self.limits.header_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self._timing:  # the client has stopped reading what the service sends
            self._arm("response", self.limits.body_idle_s)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._timing == "response":
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timeout now waits for the next request
        super().on_response_complete()

    def _follow(self) -> None:
        """Arm the deadline for what the client owes now: the rest of the headers, or the next part of the body."""
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state is h11.IDLE:
            if self._timing != "headers":  # a new request began on a kept-alive connection
                self._arm("headers", self.limits.header_s)
        elif self.conn.their_state is h11.SEND_BODY:
            self._arm("body", self.limits.body_idle_s)
        else:
            self._disarm()

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._timing = what
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timing = None, ""

    def _expired(self) -> None:
        what, self._timer = self._timing, None
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:  # the service is behind, not the client
            self._arm("body", self.limits.body_idle_s)
            return
        seconds = self.limits.header_s if what == "headers" else self.limits.body_idle_s
        _throttled.warning(what, f"closed a connection: the client read nothing of the response for {seconds:g} s"
                           if what == "response" else
                           f"closed a connection: the client sent no complete request {what} within {seconds:g} s")  # fmt: skip
        self._timing = ""
        if what == "response":  # close() would wait to flush what the client does not read
            self.transport.abort()
        else:
            self.transport.close()

