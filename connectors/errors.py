"""Connector errors, classified so the runtime can decide: back off, or park and alarm.

`str(error)` is one complete sentence meant for an operator. Nothing above `connectors/`
needs to know an asyncua or pymodbus exception type.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose."""


class ConnectorUnavailable(ConnectorError):
    """The peer cannot be reached or stopped answering; retrying later may succeed."""


class ConnectorRefused(ConnectorError):
    """The peer was reached but the connection is refused for a reason an operator must fix
    (untrusted certificate, security policy not offered, credentials rejected).

    Connectors keep retrying slowly, because the fix (approving a certificate, reconfiguring
    the server) happens outside the agent and must take effect without a restart.
    """
