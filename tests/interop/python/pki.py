"""Throwaway test PKI for the TLS interop tests (made with `cryptography`):
a CA, a server certificate for 127.0.0.1/localhost and client certificates,
written as PEM files, plus ssl.SSLContext helpers for the clients."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pem:
    cert: Path
    key: Path | None
    der: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(b: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return b.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))


def _write(dir: Path, name: str, cert: x509.Certificate, key) -> Pem:
    c, k = dir / f"{name}.crt", dir / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return Pem(c, k, cert.public_bytes(serialization.Encoding.DER))


class Ca:
    def __init__(self, dir: Path, name: str = "Switchyard Test CA"):
        self.dir = dir
        self.key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
             .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True))
        self.cert = _validity(b).sign(self.key, hashes.SHA256())
        safe = name.replace(" ", "_")
        self.pem = _write(dir, safe, self.cert, self.key)
        self.pem.key = None

    def _leaf(self, name: str, cn: str, san: list | None, usage) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = _validity(b).sign(self.key, hashes.SHA256())
        return _write(self.dir, name, cert, key)

    def server(self, name: str = "server") -> Pem:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._leaf(name, "switchyard test server", san, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, cn: str) -> Pem:
        return self._leaf(f"client-{cn}", cn, None, ExtendedKeyUsageOID.CLIENT_AUTH)


def client_context(ca: Ca | None, client: Pem | None = None) -> ssl.SSLContext:
    """An SSLContext that trusts `ca` (None: the system roots only) and presents `client`."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca.pem.cert) if ca else None)
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def tls_table(server: Pem, **extra) -> dict:
    """The listener's `tls` table for routerproc (ws_opts / rs_opts)."""
    t = {"cert": str(server.cert), "key": str(server.key)}
    t.update({k: str(v) for k, v in extra.items()})
    return t
