"""Test certificates for DICOM TLS (not a test module): a CA, and certificates it signs for 127.0.0.1, written as PEM
with the ``cryptography`` package; each valid for two days from yesterday."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _save(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    (folder / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))  # fmt: skip
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_test_pki(folder: Path, stems: tuple[str, ...] = ("pacs", "node")) -> Path:
    """``ca.pem`` / ``ca.key`` and, per stem, ``STEM.pem`` / ``STEM.key`` for 127.0.0.1 and localhost, usable as server
    and client certificates; returns ``folder``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(days=1), "not_valid_after": now + datetime.timedelta(days=2)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=_name("medanomaly test CA"), issuer_name=_name("medanomaly test CA"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    _save(folder, "ca", ca_key, ca)
    for stem in stems:
        key = ec.generate_private_key(ec.SECP256R1())
        where = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert = (x509.CertificateBuilder(subject_name=_name(stem), issuer_name=ca.subject, public_key=key.public_key(),
                                        serial_number=x509.random_serial_number(), **valid)
                .add_extension(x509.SubjectAlternativeName(where), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))  # fmt: skip
        _save(folder, stem, key, cert)
    return folder
