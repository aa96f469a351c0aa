"""Fixtures shared by every test folder; the helpers behind them live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto for this test, on a free loopback port."""
    with Broker(tmp_path) as broker:
        yield broker
