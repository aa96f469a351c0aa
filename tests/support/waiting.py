"""Bounded polling: wait for a condition instead of sleeping a fixed time.

`wait_until` is for synchronous tests (it returns whether the condition came true, so a test
asserts on it); `wait_until_async` is for async tests (it fails the test on timeout and
returns the seconds waited).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    step: float = 0.05,
    *,
    pause: Callable[[float], object] = time.sleep,
) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; return its last value.

    Between polls `pause(step)` runs: `time.sleep` by default, or e.g. `publisher.step` to
    drive a client's network loop while waiting.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        pause(step)
    return condition()


async def wait_until_async(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, step: float = 0.02
) -> float:
    """Poll `condition` (plain or async) until it holds; return the seconds it took.

    Fails the test if it does not hold within `timeout` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
