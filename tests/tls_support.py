"""A throwaway PKI for the TLS tests (server and clients), made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _certificate(name: str, key, signer_key, issuer: x509.Name | None, *, ca=False, server=False) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_test_pki(folder: Path, *, client_name: str = "acquisition-pc") -> Path:
    """A CA and, signed by it, a server certificate for localhost/127.0.0.1 and a client certificate:
    ca.pem, server.pem, server.key, client.pem, client.key in `folder`."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_pem = _certificate("stedq test CA", ca_key, ca_key, None, ca=True)
    issuer = x509.load_pem_x509_certificate(ca_pem).subject
    files = {"ca.pem": ca_pem,
             "server.pem": _certificate("localhost", server_key, ca_key, issuer, server=True),
             "server.key": _key_pem(server_key),
             "client.pem": _certificate(client_name, client_key, ca_key, issuer),
             "client.key": _key_pem(client_key)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder
