"""Fixtures of the portal tests; they live in portal_fixtures.py so that test modules import
its helpers by a unique name (several test folders have a conftest.py)."""

from portal_fixtures import client, portal, scenario

__all__ = ["client", "portal", "scenario"]
