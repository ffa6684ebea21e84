"""DICOM TLS (PS3.15 Annex B) for the DIMSE bridge (``pacs --url dimse+tls://...``) and the node (``listen``).

DIMSE sends images and reports in the clear; a hospital's security review asks for TLS wherever patient data crosses
a network. One identity and one trust anchor serve both directions:

- ``ca``: PEM certificates to trust (the hospital's CA); without it, the system's trust store. As a client, the PACS's
  certificate must be signed by it and name the host of the URL; as a node, a sender must present a certificate
  signed by it (mutual TLS) when it is given;
- ``cert`` / ``key``: our certificate and private key (PEM): what a node presents to senders, and what the bridge
  presents to a PACS that asks for a client certificate.

TLS 1.2 at least; Python's defaults otherwise (no compression, forward-secret ciphers).

Example:
    >>> DicomTls().describe()
    'TLS, trusting the system store'
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from medanomaly.errors import InputError

__all__ = ["DicomTls"]


@dataclass(frozen=True)
class DicomTls:
    """Files of a DICOM TLS identity and trust (see the module docstring)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InputError("--tls-cert and --tls-key go together (our certificate and its private key)")
        for option, path in (("--tls-ca", self.ca), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is not None and not Path(path).is_file():
                raise InputError(f"{option}: no such file", path)

    def describe(self) -> str:
        trust = f"trusting {Path(self.ca).name}" if self.ca else "trusting the system store"
        return f"TLS, {trust}" + (f", as {Path(self.cert).name}" if self.cert else "")

    def _load(self, context: ssl.SSLContext) -> ssl.SSLContext:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        for option, path, load in (("--tls-ca", self.ca, lambda p: context.load_verify_locations(cafile=str(p))),
                                   ("--tls-cert", self.cert,
                                    lambda p: context.load_cert_chain(str(p), str(self.key)))):  # fmt: skip
            if path is not None:
                try:
                    load(path)
                except (ssl.SSLError, OSError, ValueError) as exc:  # the reason only: never the file's content
                    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
                    raise InputError(f"{option}: not a usable PEM certificate or key ({reason})", path) from None
        return context

    def client_context(self) -> ssl.SSLContext:
        """What the bridge connects with: the PACS's certificate checked against ``ca`` and the host name."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the certificate and the host name
        if self.ca is None:
            context.load_default_certs()
        return self._load(context)

    def server_context(self) -> ssl.SSLContext:
        """What the node listens with: our certificate; a sender's certificate required when ``ca`` is given."""
        if self.cert is None:
            raise InputError("a TLS node needs its certificate and key (--tls-cert, --tls-key)")
        context = self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        if self.ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        return context
