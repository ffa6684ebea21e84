"""Security headers on every answer of the service, as plain ASGI middleware (so the body limit's 413 has them too).

* ``X-Content-Type-Options: nosniff``: a study's files (NIfTI, PNG, JSON) are never guessed to be HTML or script.
* ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``: no other site frames the viewer (clickjacking: a hidden
  frame under a decoy page, the user's clicks going to a delete button).
* ``Content-Security-Policy`` (:data:`CONTENT_POLICY`): scripts, styles, images and requests from the service only;
  no inline script (the API page's one is allowed by its hash, :func:`policy_with_script`), no ``eval``, WebAssembly
  compiled (NiiVue's decoders), no plugins, no ``<base>`` or form to another site. A script injected into a page
  (a study's text shown in the viewer, a file name) would not run, nor send what it read elsewhere.
* ``Referrer-Policy: no-referrer``: a study's id in a URL does not travel to another site.
* ``Cache-Control: no-store`` on the API (``/v1/...``): a patient's images and results are not kept by the browser
  or a proxy's cache after the answer (the viewer's and the API page's own files may be).

Example:
    >>> dict(security_headers("/v1/jobs"))[b"cache-control"]
    b'no-store'
    >>> b"cache-control" in dict(security_headers("/static/viewer.js"))
    False
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONTENT_POLICY", "SecurityHeaders", "policy_with_script", "route_path", "security_headers"]

#: The pages' script policy: everything from the service itself; WebAssembly may be compiled (NiiVue), nothing evaluated.
CONTENT_POLICY = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
                  "form-action 'self'; frame-ancestors 'none'")  # fmt: skip
_ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"content-security-policy", CONTENT_POLICY.encode()), (b"referrer-policy", b"no-referrer"))  # fmt: skip


def policy_with_script(page: str) -> str:
    """:data:`CONTENT_POLICY` allowing, by their SHA-256, the inline scripts of ``page`` (HTML) and no other.

    Example:
        >>> "'sha256-" in policy_with_script("<script>start()</script>")
        True
    """
    import base64
    import hashlib
    import re

    hashes = [base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
              for body in re.findall(r"<script>(.*?)</script>", page, flags=re.S)]  # fmt: skip
    allowed = " ".join(f"'sha256-{h}'" for h in hashes)
    return CONTENT_POLICY.replace("script-src 'self'", f"script-src 'self' {allowed}".rstrip(), 1)


def route_path(scope: Any) -> str:
    """The request's path within the service: behind a proxy at a prefix (``serve --root-path /medanomaly``)
    uvicorn puts the prefix in front of ``scope["path"]``, and ``/medanomaly/v1/jobs`` is the API's ``/v1/jobs``.

    Example:
        >>> route_path({"path": "/medanomaly/v1/jobs", "root_path": "/medanomaly"})
        '/v1/jobs'
    """
    path, root = str(scope.get("path", "")), str(scope.get("root_path", "") or "")
    return path[len(root):] if root and (path == root or path.startswith(root + "/")) else path


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer to ``path`` carries (see the module docstring)."""
    return [*_ALWAYS, *([(b"cache-control", b"no-store")] if path.startswith("/v1/") else [])]


class SecurityHeaders:
    """Wrap an ASGI app so that every HTTP answer carries :func:`security_headers` (a header the app set itself is
    kept as the app set it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(route_path(scope))

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
