"""HTTP answers of bounded size: what a PACS sends is read only up to a limit set before the request.

A DICOMweb answer is read whole into memory (``requests`` without streaming, as ``dicomweb-client``
asks): a PACS that sends a 40 GB JSON page, more instance data than the series metadata announced,
or a gzip bomb would fill memory before anything looked at it. :class:`BoundedSession` is a
``requests.Session`` that reads every answer body itself, chunk by chunk, after decompression, and
stops with :class:`AnswerTooLarge` as soon as the body passes its limit (a ``Content-Length`` over
the limit is refused before any byte is read). The limit is per request: :func:`answers_at_most`
sets it around one call (the PACS bridge allows a retrieval the series' announced size plus header
room, and every other answer :data:`MAX_JSON_ANSWER_BYTES`).

Example:
    >>> session = BoundedSession()
    >>> session.limit == MAX_JSON_ANSWER_BYTES
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

__all__ = ["MAX_JSON_ANSWER_BYTES", "AnswerTooLarge", "BoundedSession", "answers_at_most"]

#: Largest answer to a query, a metadata request or a store (DICOM JSON), bytes: 256 MiB holds the
#: metadata of a series of tens of thousands of instances.
MAX_JSON_ANSWER_BYTES = 256 * 2**20
_CHUNK_BYTES = 2**20


class AnswerTooLarge(requests.exceptions.RequestException):
    """The PACS' answer is larger than the limit set for this request (read no further)."""


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


class BoundedSession(requests.Session):
    """A ``requests.Session`` whose answers are read only up to :attr:`limit` bytes (decompressed)."""

    def __init__(self, limit: int = MAX_JSON_ANSWER_BYTES) -> None:
        super().__init__()
        self.limit = limit

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["stream"] = True  # the body is read below, bounded, whatever the caller asked
        response = super().send(request, **kwargs)
        if not response._content_consumed:  # a redirect's final answer was read by the send that fetched it
            response._content = self._bounded_body(response)  # requests' own cache of the body
            response._content_consumed = True
        return response

    def _bounded_body(self, response: requests.Response) -> bytes:
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > self.limit:
            response.close()
            raise AnswerTooLarge(f"the PACS announced an answer of {_mib(int(announced))}, more than the "
                                 f"{_mib(self.limit)} allowed for this request")  # fmt: skip
        body = bytearray()
        for chunk in response.iter_content(_CHUNK_BYTES):
            body += chunk
            if len(body) > self.limit:
                response.close()
                raise AnswerTooLarge(f"the PACS sent more than the {_mib(self.limit)} allowed for this "
                                     "request (read no further)")  # fmt: skip
        return bytes(body)


@contextmanager
def answers_at_most(client: Any, n_bytes: int) -> Iterator[None]:
    """Within the block, answers to ``client`` (a ``DICOMwebClient`` built on a :class:`BoundedSession`, or a
    client with a ``limit`` of its own: :class:`~medanomaly.deploy.dimse.DimseClient`) may be at most ``n_bytes``
    long; a client without either (a test's fake) is left as it is."""
    session = getattr(client, "_session", None)  # dicomweb-client keeps the session it was given there
    if not isinstance(session, BoundedSession):
        session = client if isinstance(getattr(client, "limit", None), int) else None
    if session is None:
        yield
        return
    before, session.limit = session.limit, n_bytes
    try:
        yield
    finally:
        session.limit = before
