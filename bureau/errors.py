"""The base of the bureau's own user-facing errors (see agent/protocol/errors.py)."""

from __future__ import annotations

from agent.protocol.errors import TieragentError


class BureauError(TieragentError):
    """A bureau-side error raised on purpose; str() is one user-facing sentence."""
