# asyncua types ids and timestamps as NewTypes (Int16, DateTime...); plain values are fine.
# mypy: disable-error-code="arg-type"
"""A real asyncua server for the connector tests, with knobs a plain server lacks.

The server advertises operation limits and, because asyncua does not enforce them, this
wrapper does: a Read, Browse or CreateMonitoredItems call with more items than the limit
gets BadTooManyOperations, exactly as a strict server would answer. Every call's item
count is recorded so tests can assert what the client sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

NS_URI = "urn:tieragent:test"
# The ApplicationUri of a test server with a certificate; its certificate should name it.
SERVER_URI = "urn:tieragent:test:server"
LIMIT_NODE = {
    "read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "monitored": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    "browse": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
}
Limits = dict[str, int]


def make_certificate(
    folder: Path,
    name: str,
    uri: str,
    server: bool,
    *,
    not_valid_before: datetime | None = None,
    not_valid_after: datetime | None = None,
) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM) in `folder`.

    By default it is valid from now for a year; `not_valid_before`/`not_valid_after`
    (timezone-aware) override that, e.g. to make a certificate that has already expired.
    """
    key = cert_gen.generate_private_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [usage])
    if not_valid_before is not None or not_valid_after is not None:
        # cert_gen always starts the validity now, so re-sign the same content (subject,
        # key, extensions) with the requested period.
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(not_valid_before or cert.not_valid_before_utc)
            .not_valid_after(not_valid_after or cert.not_valid_after_utc)
        )
        for extension in cert.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        cert = builder.sign(key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class _Users:
    """Username/password check for the test server (None -> access denied)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaTestServer:
    """An asyncua server on 127.0.0.1:`port` with variables under Objects/Factory.

    `variables` maps a path like "L1/CNC-01/State" to its initial value (bool, int, float
    or str); each becomes a variable with NodeId `ns=<idx>;s=Factory/<path>` inside nested
    folders. `advertise` sets OperationLimits values; `enforce` rejects larger calls.
    """

    def __init__(
        self,
        port: int,
        variables: dict[str, Any],
        *,
        advertise: Limits | None = None,
        enforce: Limits | None = None,
        refuse_subscriptions: bool = False,
        policies: list[ua.SecurityPolicyType] | None = None,
        certificate: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
        namespaces_before: int = 0,
    ) -> None:
        self.port = port
        self.variables = dict(variables)
        self.advertise = advertise or {}
        self.enforce = enforce or {}
        self.refuse_subscriptions = refuse_subscriptions
        self.policies = policies
        self.certificate = certificate
        self.users = users
        self.namespaces_before = namespaces_before
        self.sizes: dict[str, list[int]] = {"read": [], "monitored": [], "browse": []}
        self.subscriptions_requested = 0
        self.server: Server | None = None
        self.index = 0
        self.nodes: dict[str, Node] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    def node_id(self, path: str) -> str:
        return f"ns={self.index};s=Factory/{path}"

    @staticmethod
    def nsu_id(path: str) -> str:
        return f"nsu={NS_URI};s=Factory/{path}"

    async def prepare(self) -> None:
        """Build the address space (about a second); `start()` then only opens the port."""
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("tieragent test server")
        if self.certificate is not None:
            await server.set_application_uri(SERVER_URI)
            await server.load_certificate(str(self.certificate[0]))
            await server.load_private_key(str(self.certificate[1]))
        if self.policies is not None:
            server.set_security_policy(self.policies)
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        for extra in range(self.namespaces_before):
            await server.register_namespace(f"urn:tieragent:filler:{extra}")
        self.index = await server.register_namespace(NS_URI)
        folders: dict[str, Node] = {
            "": await server.nodes.objects.add_folder(
                ua.NodeId("Factory", self.index), ua.QualifiedName("Factory", self.index)
            )
        }
        for path, value in self.variables.items():
            parent = ""
            for segment in path.split("/")[:-1]:
                here = f"{parent}/{segment}" if parent else segment
                if here not in folders:
                    folders[here] = await folders[parent].add_folder(
                        ua.NodeId(f"Factory/{here}", self.index),
                        ua.QualifiedName(segment, self.index),
                    )
                parent = here
            self.nodes[path] = await folders[parent].add_variable(
                ua.NodeId(f"Factory/{path}", self.index),
                ua.QualifiedName(path.split("/")[-1], self.index),
                value,
                varianttype=_variant_type(value),
            )
        # No 1 s clock task: it only updates ServerStatus.CurrentTime and slows stop().
        server.disable_clock()
        self.server = server
        self._instrument(server)
        await self.set_limits(self.advertise, self.enforce)

    async def set_limits(self, advertise: Limits, enforce: Limits) -> None:
        """Advertise and enforce other operation limits from now on; clear the records."""
        assert self.server is not None
        self.advertise, self.enforce = dict(advertise), dict(enforce)
        for name, node in LIMIT_NODE.items():
            await self.server.write_attribute_value(
                ua.NodeId(node),
                ua.DataValue(ua.Variant(advertise.get(name, 0), ua.VariantType.UInt32)),
            )
        for sizes in self.sizes.values():
            sizes.clear()

    def _instrument(self, server: Server) -> None:
        iserver = server.iserver
        read = iserver.attribute_service.read
        browse = iserver.view_service.browse
        monitor = iserver.subscription_service.create_monitored_items
        subscribe = iserver.subscription_service.create_subscription

        def check(kind: str, count: int) -> None:
            self.sizes[kind].append(count)
            if kind in self.enforce and count > self.enforce[kind]:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)

        def limited_read(params: ua.ReadParameters) -> Any:
            check("read", len(params.NodesToRead))
            return read(params)

        def limited_browse(params: ua.BrowseParameters) -> Any:
            check("browse", len(params.NodesToBrowse))
            return browse(params)

        async def limited_monitor(params: ua.CreateMonitoredItemsParameters) -> Any:
            check("monitored", len(params.ItemsToCreate))
            return await monitor(params)

        async def maybe_subscribe(*args: Any, **kwargs: Any) -> Any:
            self.subscriptions_requested += 1
            if self.refuse_subscriptions:
                raise ServiceError(ua.StatusCodes.BadServiceUnsupported)
            return await subscribe(*args, **kwargs)

        iserver.attribute_service.read = limited_read  # type: ignore[method-assign]
        iserver.view_service.browse = limited_browse  # type: ignore[method-assign]
        iserver.subscription_service.create_monitored_items = limited_monitor  # type: ignore[method-assign]
        iserver.subscription_service.create_subscription = maybe_subscribe  # type: ignore[method-assign]

    async def start(self) -> None:
        if self.server is None:
            await self.prepare()
        assert self.server is not None
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> OpcUaTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def write(
        self,
        path: str,
        value: Any,
        *,
        status: int = ua.StatusCodes.Good,
        source_ts: datetime | str | None = "now",
        server_ts: datetime | None = None,
    ) -> None:
        """Set a value as a device would, with its status and timestamps."""
        assert self.server is not None
        now = datetime.now(UTC)
        await self.server.write_attribute_value(
            self.nodes[path].nodeid,
            ua.DataValue(
                ua.Variant(value, _variant_type(value)),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=now if source_ts == "now" else source_ts,
                ServerTimestamp=server_ts,
            ),
        )


def _variant_type(value: Any) -> ua.VariantType:
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        return ua.VariantType.Int32
    if isinstance(value, float):
        return ua.VariantType.Double
    return ua.VariantType.String
