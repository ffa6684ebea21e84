"""A request body limit as plain ASGI middleware: 413 from ``Content-Length`` before reading, and
413 while streaming when a body without (or with a false) length grows past the limit."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit"]


class BodyLimit:
    """Wrap an ASGI app so no request body over ``max_bytes`` is read.

    Args:
        app: the ASGI app.
        max_bytes: the largest body accepted, in bytes.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body larger than the limit of {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        over = False
        refused = False

        async def counting_receive() -> Any:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # stop reading: the app sees a disconnect and gives up
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal refused
            if not over:
                await send(message)
            elif not refused:  # whatever the app answers to the cut body, the client gets 413
                refused = True
                await self._refuse(send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not refused:
                await self._refuse(send)
