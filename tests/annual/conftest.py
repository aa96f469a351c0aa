"""Fixtures of the annual tests; the scenario itself lives in annual_scenario.py so that test
modules import it by a unique name (several test folders have a conftest.py)."""

from annual_scenario import evidence, scenario

__all__ = ["evidence", "scenario"]
