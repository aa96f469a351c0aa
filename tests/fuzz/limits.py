"""The matrix's memory bound per input (Z1: 0 inputs > 256 MB), by tracemalloc.

Hypothesis's deadline holds the time bound (tests/fuzz/profiles.py). Memory is traced for
the whole test and the peak measured per input, counted from what was allocated before the
input: tracemalloc sees every Python allocation and numpy's buffers. (It also slows the
parsers down, so the time bound is checked with that handicap: conservative.)
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

MAX_INPUT_BYTES = 256 * 1024 * 1024

T = TypeVar("T")


@contextmanager
def traced() -> Iterator[None]:
    """Trace allocations for the duration (nested use is fine: the outer one stops it)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def within_memory(parse: Callable[[], T]) -> T:
    """`parse()`, failing the example if it allocated more than MAX_INPUT_BYTES at its peak."""
    assert tracemalloc.is_tracing(), "call inside `traced()`"
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        return parse()
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
        assert peak <= MAX_INPUT_BYTES, f"one input took {peak / 2**20:.0f} MB (bound 256 MB)"
