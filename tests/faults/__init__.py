"""Fault injection for tests that need a broken network without privileges."""

from .proxy import FaultProxy

__all__ = ["FaultProxy"]
