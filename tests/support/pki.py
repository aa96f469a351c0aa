"""A throwaway PKI made with `cryptography`: a CA, a broker (server) certificate and a
client certificate as PEM files, for the MQTT-over-TLS tests (`Broker(..., tls=make_pki(...))`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA, a broker certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 from the start, like every private key the project writes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    valid: tuple[dt.datetime, dt.datetime],
    names: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A CA certificate when `issuer` is None, else a leaf for `usage` (server/client auth)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    is_ca = issuer is None
    builder = builder.add_extension(
        x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=not is_ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=is_ca,
            crl_sign=is_ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        alt: list[x509.GeneralName] = []
        for entry in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(
    directory: Path,
    *,
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    server_expired: bool = False,
) -> Pki:
    """A CA plus a broker certificate for `server_names` (expired if asked) and a client
    certificate, written as PEM files under `directory` (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    current = (now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    expired = (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("tieragent test CA", ca_key, None, ca_key, valid=current)
    files = {"ca": directory / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = {
        "server": (server_names, ExtendedKeyUsageOID.SERVER_AUTH, server_expired),
        "client": ((), ExtendedKeyUsageOID.CLIENT_AUTH, False),
    }
    for role, (names, usage, is_expired) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        valid = expired if is_expired else current
        cert = _certificate(
            f"tieragent test {role}", key, ca, ca_key, valid=valid, names=names, usage=usage
        )
        files[f"{role}_cert"] = directory / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = directory / f"{role}-key.pem"
        _write_key(files[f"{role}_key"], key)
    return Pki(**files)

