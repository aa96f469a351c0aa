"""Self-signed X.509 application certificates for OPC UA (server and client).

OPC UA (Part 6 §6.2.2) wants the application URI in the certificate's subjectAltName and
key usages that allow both signing and key transport; a certificate without them is
refused by strict clients. Private keys are written as unencrypted PKCS#8 PEM with mode
0600, atomically (temp file + rename), so a crash never leaves a half-written key.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_APPLICATION_URI = "urn:tieragent:simulator:server"
CLIENT_APPLICATION_URI = "urn:tieragent:agent:client"


@dataclass(frozen=True, slots=True)
class CertificatePair:
    certificate: Path  # DER
    private_key: Path  # PEM, mode 0600


def generate_certificate(
    out_dir: Path,
    name: str,
    application_uri: str,
    *,
    hostnames: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    valid_from: datetime | None = None,
    valid_days: float = 365.0,
    key_size: int = 2048,
) -> CertificatePair:
    """Create `<name>_cert.der` and `<name>_key.pem` in `out_dir` (created if missing).

    `valid_from` defaults to one hour ago (clock skew between gateway and server); pass a
    date in the past with a short `valid_days` to make an expired certificate for tests.
    Overwrites existing files of the same name. Raises OSError if the folder is not
    writable.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start = valid_from if valid_from is not None else datetime.now(UTC) - timedelta(hours=1)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tieragent"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt_names += [x509.DNSName(host) for host in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = CertificatePair(out_dir / f"{name}_cert.der", out_dir / f"{name}_key.pem")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(pair.private_key, key_pem, mode=0o600)
    _write_atomically(pair.certificate, certificate.public_bytes(serialization.Encoding.DER), 0o644)
    return pair


def ensure_certificate(out_dir: Path, name: str, application_uri: str) -> CertificatePair:
    """Reuse `<name>` in `out_dir` if both files exist, else generate it."""
    pair = CertificatePair(out_dir / f"{name}_cert.der", out_dir / f"{name}_key.pem")
    if pair.certificate.exists() and pair.private_key.exists():
        return pair
    return generate_certificate(out_dir, name, application_uri)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # The temp file gets its final mode before any byte is written, so a key is never
    # readable by others, even for an instant.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
