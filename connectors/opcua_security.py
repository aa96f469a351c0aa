"""OPC UA transport security: the trust list and the client's secure-channel settings.

Secure by default, with none of asyncua's permissive defaults:

- A configured secure policy is used or the connection is refused. If the server does not
  offer that policy and mode, `SecurityNotOffered` names what it does offer; there is no
  silent fallback to None (docs/reliability.md S1).
- The server certificate is checked against the trust list *before* it is used, with
  asyncua's `CertificateValidator(TRUSTED_VALIDATION | PEER_SERVER)`: an unknown
  certificate is refused and saved to `<pki_dir>/rejected/`; the operator approves it by
  moving the file to `<pki_dir>/trusted/`. No trust on first use (S2). The trust list is
  re-read on every connection attempt, so an approval takes effect without a restart.
- The same validator is installed on the client, so the certificate presented at
  CreateSession is checked again (asyncua also refuses one that differs from the endpoint's).

Without `pki_dir` the trust list lives in `<folder of the client certificate>/pki`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connectors.config import OpcUaConnection, OpcUaMode, OpcUaPolicy, OpcUaSecurity
from connectors.errors import ConnectorRefused

log = logging.getLogger(__name__)

POLICY_CLASS: dict[OpcUaPolicy, type[security_policies.SecurityPolicy]] = {
    OpcUaPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    OpcUaPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    OpcUaPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MESSAGE_MODE: dict[OpcUaMode, ua.MessageSecurityMode] = {
    OpcUaMode.NONE: ua.MessageSecurityMode.None_,
    OpcUaMode.SIGN: ua.MessageSecurityMode.Sign,
    OpcUaMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_VALIDATION = (
    CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_SERVER
)


class SecurityNotOffered(ConnectorRefused):
    """The server offers no endpoint with the configured policy and mode."""


class UntrustedServerCertificate(ConnectorRefused):
    """The server certificate is not in the trust list (or is invalid); it was saved to
    rejected/ for the operator to inspect and approve."""

    def __init__(self, message: str, saved_to: Path) -> None:
        super().__init__(message)
        self.saved_to = saved_to


def first_certificate(der_chain: bytes) -> bytes:
    """The leaf certificate of a DER chain (servers may send the whole chain)."""
    length = int.from_bytes(der_chain[2:4], "big") + 4
    return der_chain[:length]


def default_pki_dir(security: OpcUaSecurity) -> Path:
    if security.pki_dir is not None:
        return security.pki_dir
    if security.certificate is None:
        raise ConnectorRefused("A secure OPC UA policy needs a client certificate.")
    return security.certificate.parent / "pki"


class TrustList:
    """The folders `trusted/` (approved server certificates or their CAs), `rejected/`
    (refused ones) and optionally `crl/` (revocation lists) under one pki folder."""

    def __init__(self, pki_dir: Path) -> None:
        self.trusted = pki_dir / "trusted"
        self.rejected = pki_dir / "rejected"
        self.crl = pki_dir / "crl"
        self.trusted.mkdir(parents=True, exist_ok=True)
        self.rejected.mkdir(parents=True, exist_ok=True)

    def _has_certificates(self) -> bool:
        return any(p.suffix.lower() in (".der", ".pem") for p in self.trusted.iterdir())

    async def validator(self) -> CertificateValidator:
        """A validator over the trust list as it is on disk now."""
        crl = [self.crl] if self.crl.is_dir() else []
        store = TrustStore([self.trusted], crl)
        # cryptography refuses an empty store; with no certificate nothing is trusted, and
        # the validator (store=None) still checks time, URI and key usage.
        if self._has_certificates():
            await store.load()
            return CertificateValidator(_VALIDATION, store)
        return CertificateValidator(_VALIDATION, _EmptyTrustStore(store))

    async def check(
        self, certificate: x509.Certificate, server: ua.ApplicationDescription, endpoint: str
    ) -> None:
        """Return if the server certificate is trusted and valid, else save it to rejected/
        and raise UntrustedServerCertificate with the path and what to do."""
        validator = await self.validator()
        try:
            await validator.validate(certificate, server)
        except ServiceError as exc:
            status = ua.StatusCode(ua.UInt32(exc.code))
            saved = self.reject(certificate)
            if exc.code == ua.StatusCodes.BadCertificateUntrusted:
                problem, fix = "is not trusted", f"to trust it, move it to {self.trusted}/"
            else:
                # Expired, wrong application URI, bad key usage: trusting it cannot help.
                problem = f"is not acceptable ({status.name})"
                fix = "the server needs a valid certificate for its application URI"
            raise UntrustedServerCertificate(
                f"The server certificate of {endpoint} ({_subject(certificate)}, SHA-256 "
                f"{_thumbprint(certificate)[:16]}) {problem}. It was saved to {saved}; {fix}.",
                saved,
            ) from None

    def reject(self, certificate: x509.Certificate) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _subject(certificate))[:48]
        path = self.rejected / f"{name}_{_thumbprint(certificate)[:16]}.der"
        path.write_bytes(certificate.public_bytes(Encoding.DER))
        return path


class _EmptyTrustStore(TrustStore):
    """A trust store that trusts nothing (TrustStore cannot be built empty)."""

    def __init__(self, template: TrustStore) -> None:
        super().__init__(template.trust_locations, template.crl_locations)

    def is_trusted(self, certificate: x509.Certificate) -> bool:
        return False

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        return False


def _thumbprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _subject(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def _application_uri(certificate_path: Path) -> str | None:
    data = certificate_path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _offered(endpoints: list[ua.EndpointDescription]) -> str:
    names = sorted(
        {
            f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name.rstrip('_')}"
            for ep in endpoints
        }
    )
    return ", ".join(names) or "nothing"


async def apply_security(client: Client, connection: OpcUaConnection) -> None:
    """Configure `client` (not yet connected) for the connection's policy, mode and user.

    For a secure policy this fetches the endpoint list over a None channel (discovery is
    always unsecured), picks the endpoint with the configured policy and mode, checks its
    certificate against the trust list and pins it. Raises SecurityNotOffered or
    UntrustedServerCertificate (both ConnectorRefused); network errors propagate as raised
    by asyncua (OSError, TimeoutError, ua.UaError).
    """
    security = connection.security
    if security.username is not None:
        client.set_user(security.username)
        if security.password is not None:
            try:
                client.set_password(security.password.resolve())
            except (LookupError, OSError) as exc:
                raise ConnectorRefused(f"The OPC UA password cannot be read: {exc}.") from None
    if security.policy == OpcUaPolicy.NONE:
        return
    assert security.certificate is not None and security.private_key is not None
    policy = POLICY_CLASS[security.policy]
    mode = MESSAGE_MODE[security.mode]
    endpoints = await client.connect_and_get_server_endpoints()
    chosen = next(
        (ep for ep in endpoints if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode),
        None,
    )
    if chosen is None:
        raise SecurityNotOffered(
            f"The OPC UA server at {connection.endpoint} does not offer "
            f"{security.policy.value}/{security.mode.value}; it offers {_offered(endpoints)}. "
            "The connection is refused rather than made with weaker security."
        )
    der = first_certificate(chosen.ServerCertificate or b"")
    if not der:
        raise ConnectorRefused(f"The OPC UA server at {connection.endpoint} sent no certificate.")
    trust = TrustList(default_pki_dir(security))
    await trust.check(x509.load_der_x509_certificate(der), chosen.Server, connection.endpoint)
    uri = _application_uri(security.certificate)
    if uri is not None:
        # Servers check that the client's ApplicationUri matches its certificate.
        client.application_uri = uri
    await client.set_security(
        policy,
        certificate=str(security.certificate),
        private_key=str(security.private_key),
        server_certificate=der,
        mode=mode,
    )
    client.certificate_validator = await trust.validator()
    log.info(
        "OPC UA %s: %s/%s with a trusted server certificate.",
        connection.endpoint,
        security.policy.value,
        security.mode.value,
    )
