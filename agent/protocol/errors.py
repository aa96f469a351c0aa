"""The root of every error tieragent raises on purpose, shared by the agent and the bureau.

An error raised on purpose is one a user can act on: str() is the sentence they read, and
`exit_code` is what the `tieragent` command exits with when the error reaches it — 2 (the
default) for a mistake in what the user gave, 1 for a run or a verification that failed.
The command line prints and maps these in one place (tieragent/console.py).

    TieragentError
    ├── ProtocolError   the wire contract (this package): period, envelope, key, broker, report
    ├── AgentError      agent/errors.py: configuration, store, outbox, publisher, history
    └── BureauError     bureau/errors.py: store, registry, annual evaluation
"""

from __future__ import annotations


class TieragentError(Exception):
    """An error raised on purpose; str() is one user-facing sentence."""

    exit_code: int = 2


class ProtocolError(TieragentError):
    """A problem with something of the wire contract both sides share."""
