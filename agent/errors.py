"""The base of the agent's own user-facing errors (see agent/protocol/errors.py)."""

from __future__ import annotations

from agent.protocol.errors import TieragentError


class AgentError(TieragentError):
    """An agent-side error raised on purpose; str() is one user-facing sentence."""
