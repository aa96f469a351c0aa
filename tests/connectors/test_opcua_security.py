"""OPC UA security: every secure policy and mode connects, the trust list refuses unknown
server certificates until an operator approves them, expired or wrong-URI certificates are
refused even when trusted, and nothing falls back to None."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from connector_helpers import Recorder, running
from connector_opcua_server import SERVER_URI, OpcUaTestServer, make_certificate

from connectors.base import LinkState, SignalBinding
from connectors.config import (
    OpcUaAddress,
    OpcUaConnection,
    OpcUaMode,
    OpcUaPolicy,
    OpcUaSecurity,
    Secret,
)
from connectors.errors import ConnectorRefused
from connectors.opcua import OpcUaConnector
from connectors.opcua_security import SecurityNotOffered, UntrustedServerCertificate
from connectors.opcua_session import (
    BatchedSession,
    close_client,
    open_client,
    read_operation_limits,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]
USERS = {"operator": "s3cret-pass"}


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server_cert, self.server_key = make_certificate(
            root / "server", "server", SERVER_URI, server=True
        )
        self.client_cert, self.client_key = make_certificate(
            root / "client", "client", "urn:tieragent:test:client", server=False
        )
        (root / "password").write_text(USERS["operator"] + "\n", encoding="utf-8")
        (root / "wrong").write_text("nope", encoding="utf-8")

    def security(
        self, pki_dir: Path, policy: OpcUaPolicy, mode: OpcUaMode, password: str = "password"
    ) -> OpcUaSecurity:
        return OpcUaSecurity(
            policy=policy,
            mode=mode,
            certificate=self.client_cert,
            private_key=self.client_key,
            pki_dir=pki_dir,
            username="operator",
            password=Secret(file=self.root / password),
        )

    def trusting(self, name: str) -> Path:
        """A pki folder whose trusted/ already holds the server certificate."""
        folder = self.root / name
        (folder / "trusted").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.server_cert, folder / "trusted" / "server.der")
        return folder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure_server(pki: Pki) -> AsyncIterator[OpcUaTestServer]:
    server = OpcUaTestServer(
        free_port(),
        {"Speed": 42.0},
        policies=SECURE_POLICIES,
        certificate=(pki.server_cert, pki.server_key),
        users=USERS,
    )
    async with server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def open_server() -> AsyncIterator[OpcUaTestServer]:
    async with OpcUaTestServer(free_port(), {"Speed": 1.0}) as server:
        yield server


def _conn(endpoint: str, security: OpcUaSecurity, **overrides: Any) -> OpcUaConnection:
    settings: dict[str, Any] = {
        "endpoint": endpoint,
        "request_timeout_s": 2.0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "security": security,
    }
    settings.update(overrides)
    return OpcUaConnection(**settings)


POLICY_MODES = [
    (policy, mode)
    for policy in (
        OpcUaPolicy.BASIC256SHA256,
        OpcUaPolicy.AES128_SHA256_RSAOAEP,
        OpcUaPolicy.AES256_SHA256_RSAPSS,
    )
    for mode in (OpcUaMode.SIGN, OpcUaMode.SIGN_AND_ENCRYPT)
]


@pytest.mark.parametrize(("policy", "mode"), POLICY_MODES, ids=lambda v: str(v.value))
async def test_S3_every_secure_policy_and_mode_connects(
    pki: Pki, secure_server: OpcUaTestServer, policy: OpcUaPolicy, mode: OpcUaMode
) -> None:
    """If the server certificate is trusted, then each of the six secure policy/mode pairs
    connects with username and password and reads data (S3)."""
    security = pki.security(pki.trusting("trusting"), policy, mode)
    client = await open_client(_conn(secure_server.endpoint, security))
    try:
        assert client.security_policy.URI.endswith(policy.value)
        assert client.security_policy.Mode.name == mode.value
        session = BatchedSession(client, await read_operation_limits(client))
        (value,) = await session.read([ua.NodeId.from_string(secure_server.node_id("Speed"))])
        assert value.Value is not None and value.Value.Value == 42.0
    finally:
        await close_client(client, 2.0)


async def test_unknown_server_certificate_is_refused_until_approved(
    pki: Pki, secure_server: OpcUaTestServer
) -> None:
    """If the server certificate is not in the trust list, then the connector refuses it,
    saves it to rejected/ and says how to approve it; once an operator moves it to trusted/,
    the running connector connects without a restart (no trust on first use)."""
    pki_dir = pki.root / "fresh"
    security = pki.security(pki_dir, OpcUaPolicy.BASIC256SHA256, OpcUaMode.SIGN_AND_ENCRYPT)
    binding = SignalBinding(
        "CNC-01", "speed", 1.0, opcua=OpcUaAddress(node=secure_server.node_id("Speed"))
    )
    connector = OpcUaConnector("cnc", _conn(secure_server.endpoint, security), [binding])
    recorder = Recorder()
    async with running(connector, recorder):
        await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 10)
        rejected = list((pki_dir / "rejected").glob("*.der"))
        assert len(rejected) == 1
        assert rejected[0].read_bytes() == pki.server_cert.read_bytes()
        reason = recorder.links[-1].reason
        assert "is not trusted" in reason and str(rejected[0]) in reason
        assert "move it to" in reason and str(pki_dir / "trusted") in reason
        assert recorder.samples == []
        rejected[0].rename(pki_dir / "trusted" / rejected[0].name)
        await wait_until_async(lambda: recorder.latest("speed") is not None, 10)
    assert recorder.states()[-1] == LinkState.CONNECTED
    assert recorder.latest("speed").value == 42.0  # type: ignore[union-attr]


# What is wrong with the server certificate -> (is it itself in trusted/, why it is refused).
# The expired and wrong-URI ones are trusted, so only their flaw can be the reason.
BAD_CERTIFICATES = {
    "unknown": (False, "is not trusted"),
    "expired": (True, "is not acceptable (BadCertificateTimeInvalid)"),
    "wrong-uri": (True, "is not acceptable (BadCertificateUriInvalid)"),
}


def _bad_certificate(folder: Path, flaw: str) -> tuple[Path, Path]:
    name = f"server-{flaw}"
    if flaw == "expired":
        now = datetime.now(UTC)
        return make_certificate(
            folder,
            name,
            SERVER_URI,
            server=True,
            not_valid_before=now - timedelta(days=30),
            not_valid_after=now - timedelta(days=1),
        )
    if flaw == "wrong-uri":
        return make_certificate(folder, name, "urn:tieragent:test:elsewhere", server=True)
    return make_certificate(folder, name, SERVER_URI, server=True)


@pytest.mark.parametrize("flaw", list(BAD_CERTIFICATES))
async def test_S2_bad_server_certificate_is_refused_and_saved(pki: Pki, flaw: str) -> None:
    """If the server presents an unknown certificate, or a trusted one that has expired or
    whose SubjectAltName URI is not the server's ApplicationUri, then every attempt is
    refused with the reason, the certificate is saved to rejected/ byte for byte and no
    sample flows (S2: 3/3 refused, files saved)."""
    in_trusted, why = BAD_CERTIFICATES[flaw]
    cert, key = _bad_certificate(pki.root / f"bad-{flaw}", flaw)
    # trusted/ is never empty: it holds the good server certificate, so "unknown" goes
    # through the real trust store rather than the trust-nothing one.
    pki_dir = pki.trusting(f"pki-{flaw}")
    if in_trusted:
        shutil.copy(cert, pki_dir / "trusted" / cert.name)
    server = OpcUaTestServer(
        free_port(),
        {"Speed": 42.0},
        policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
        certificate=(cert, key),
        users=USERS,
    )
    security = pki.security(pki_dir, OpcUaPolicy.BASIC256SHA256, OpcUaMode.SIGN_AND_ENCRYPT)
    # The namespace URI form: node_id() needs the namespace index of a started server.
    binding = SignalBinding(
        "CNC-01", "speed", 1.0, opcua=OpcUaAddress(node=OpcUaTestServer.nsu_id("Speed"))
    )
    connector = OpcUaConnector("cnc", _conn(server.endpoint, security), [binding])
    recorder = Recorder()
    async with server, running(connector, recorder):
        await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 10)
        rejected = list((pki_dir / "rejected").glob("*.der"))
        assert len(rejected) == 1
        # Retries failing the same way emit no new link event; a retry shows as the file
        # saved again: the next attempt is refused as well.
        rejected[0].unlink()
        await wait_until_async(rejected[0].exists, 10)
    assert list((pki_dir / "rejected").glob("*.der")) == rejected
    assert rejected[0].read_bytes() == cert.read_bytes()
    assert recorder.states() == [LinkState.CONNECTING, LinkState.DISCONNECTED]
    reason = recorder.links[-1].reason
    assert why in reason and str(rejected[0]) in reason
    # Moving a certificate to trusted/ only helps when it is merely unknown.
    assert ("move it to" in reason) == (not in_trusted)
    assert connector.stats.sessions == 0 and recorder.samples == []


async def test_untrusted_certificate_error_from_open_client(
    pki: Pki, secure_server: OpcUaTestServer
) -> None:
    """If a probe connects to a server with an unknown certificate, then it gets
    UntrustedServerCertificate naming the saved file."""
    security = pki.security(pki.root / "probe", OpcUaPolicy.AES256_SHA256_RSAPSS, OpcUaMode.SIGN)
    with pytest.raises(UntrustedServerCertificate) as caught:
        await open_client(_conn(secure_server.endpoint, security))
    assert caught.value.saved_to.exists()
    assert caught.value.saved_to.parent == pki.root / "probe" / "rejected"


async def test_S1_secure_policy_against_a_none_only_server_is_refused(
    pki: Pki, open_server: OpcUaTestServer
) -> None:
    """If a secure policy is configured but the server offers only None, then the connection
    is refused with a sentence naming what the server offers, and no data flows (S1)."""
    security = pki.security(pki.trusting("trusting"), OpcUaPolicy.BASIC256SHA256, OpcUaMode.SIGN)
    with pytest.raises(
        SecurityNotOffered, match="does not offer Basic256Sha256/Sign; it offers None/None"
    ):
        await open_client(_conn(open_server.endpoint, security))
    binding = SignalBinding(
        "CNC-01", "speed", 1.0, opcua=OpcUaAddress(node=open_server.node_id("Speed"))
    )
    connector = OpcUaConnector("cnc", _conn(open_server.endpoint, security), [binding])
    recorder = Recorder()
    async with running(connector, recorder):
        await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 5)
    assert connector.stats.sessions == 0 and recorder.samples == []
    assert "rather than made with weaker security" in recorder.links[-1].reason


async def test_wrong_password_is_a_clear_refusal(pki: Pki, secure_server: OpcUaTestServer) -> None:
    """If the password is wrong, then the error says the server refused the session."""
    security = pki.security(
        pki.trusting("trusting"), OpcUaPolicy.BASIC256SHA256, OpcUaMode.SIGN_AND_ENCRYPT, "wrong"
    )
    with pytest.raises(ConnectorRefused, match="refused the session"):
        await open_client(_conn(secure_server.endpoint, security))
