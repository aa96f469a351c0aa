"""What a period's report is computed from, and worker processes that compute it ahead.

`period_inputs` reads a period's base measures and its sealed raw segments and computes the
tier evaluation, the factory's indicators and the raw-data segment digests: everything of a
report that is measured. Signing and committing stay with the caller, in period order. The
period's days must be sealed first (agent.store.sealed; `agent.reporter` does it): the digests
are those of the sealed segments, never of the live samples.

Building many days (`agent.reporter.build_period_reports`) spends most of its time here, in
Python that holds the GIL, so `InputPool` runs `period_inputs` in worker processes, each
with its own read-only connection to agent.db, a few periods ahead of the committing
process. The workers run the same function on the same rows; only where it runs differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import pickle
import sqlite3
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from agent.assess import assess
from agent.child_env import child_env
from agent.config import FactoryConfig
from agent.errors import AgentError
from agent.protocol.merkle import root
from agent.store.report_reads import read_base_measures
from agent.store.sealed import SealPlan, plan_seals, sealed_digests
from indicators.catalog import BASELINE_INDICATORS, INDICATORS
from indicators.policy import PolicySet


@dataclass(frozen=True)
class PeriodInputs:
    base: pd.DataFrame
    evaluation: dict[str, Any]
    indicators: dict[str, Any] | None  # the factory scope, without baseline indicators
    digests: list[bytes]
    merkle_root: bytes  # root(digests), computed where the digests were
    # Computed ahead by a worker: the period's days not sealed yet, as they would be sealed
    # (the digests include them); the committing process stores them (Store.seal_days).
    seals: tuple[SealPlan, ...] = ()


def period_inputs(
    config: FactoryConfig, policy: PolicySet, inventory: pd.DataFrame, base: pd.DataFrame,
    digests_of: Callable[[], list[bytes]],
) -> PeriodInputs:
    """The measured part of a period's report, from its base measures and the leaf hashes
    of its sealed raw segments (`digests_of()`, in leaf order)."""
    assessed = assess(config, base, inventory, policy)
    # The evaluation computed the factory's indicators from these base measures already.
    factory_scope = assessed.indicators.get("factory")
    indicators = (
        {
            key: value.to_json()
            for key, value in sorted(factory_scope.items())
            if key in INDICATORS and key not in BASELINE_INDICATORS  # a report has no baseline
        }
        if factory_scope is not None
        else None
    )
    digests = digests_of()
    return PeriodInputs(base, assessed.to_json(), indicators, digests, root(digests))


@contextlib.contextmanager
def long_lived_frozen() -> Generator[None, None, None]:
    """The objects alive now (imported modules, the config, the policy) left out of the
    garbage collector's passes until the end of the block. A day's report allocates enough
    to set off full passes, and each walked every one of them: about a third of the CPU of
    building a day (BENCHMARKS.md, issue 20). Cycles made inside are still collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- worker processes -------------------------------------------------------------------
#
# Plain child processes (`python -m agent.report_worker`) speaking pickle over their stdin
# and stdout, not multiprocessing: its spawn and forkserver methods re-run the parent's main
# script in every child (a script without a __main__ guard, or one whose imports need its
# own directory on the path, breaks), and fork is unsafe under the demo's threads.


class WorkerFailed(AgentError):
    """A report-input worker process died or could not start."""


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """A worker's loop: a setup message, then one (start, end) request per period, each
    answered with ("ok", PeriodInputs) or ("error", exception), until end of input."""
    db, config, policy, inventory = pickle.load(stdin)
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    gc.freeze()  # everything set up so far lives as long as the worker
    while True:
        try:
            start, end = pickle.load(stdin)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = (
                "ok", stored_period_inputs(conn, config, policy, inventory, start, end)
            )
        except Exception as error:  # handed to the parent, raised there in period order
            answer = ("error", (f"{type(error).__name__}: {error}", _pickled(error)))
        pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


def _pickled(error: Exception) -> bytes | None:
    try:
        blob = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # some exceptions pickle but do not unpickle (extra __init__ args)
    except Exception:
        return None
    return blob


def stored_period_inputs(
    conn: sqlite3.Connection, config: FactoryConfig, policy: PolicySet,
    inventory: pd.DataFrame, start: float, end: float,
) -> PeriodInputs:
    """`period_inputs` of the day [start, end) read over `conn`, as `Store` reads it, with
    the day's seal planned here if it is not sealed yet (sealing encodes and compresses: the
    workers do that part in parallel, the committing process only stores the blocks)."""
    plans = plan_seals(conn, [(int(start), int(end))])
    inputs = period_inputs(
        config, policy, inventory, read_base_measures(conn, start, end),
        lambda: sealed_digests(conn, start, end, plans),
    )
    return dataclasses.replace(inputs, seals=tuple(plans))


class InputPool:
    """`period_inputs` of many periods in `workers` child processes, handed back in order.

    Each worker gets every `workers`-th period; at most `ahead` periods per worker wait to
    be taken (memory stays flat). The children are ours: `close` ends them by PID.
    """

    def __init__(
        self, db: Path, config: FactoryConfig, policy: PolicySet, inventory: pd.DataFrame,
        workers: int,
    ) -> None:
        self.ahead = 2
        self._children: list[subprocess.Popen[bytes]] = []
        setup = pickle.dumps((str(db), config, policy, inventory), pickle.HIGHEST_PROTOCOL)
        for _ in range(workers):
            child = subprocess.Popen(
                [sys.executable, "-m", "agent.report_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
            )
            self._children.append(child)
            self._send(child, setup)

    def _send(self, child: subprocess.Popen[bytes], data: bytes) -> None:
        assert child.stdin is not None
        try:
            child.stdin.write(data)
            child.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self._died(child)) from None

    def _died(self, child: subprocess.Popen[bytes]) -> str:
        return (
            f"a report-building worker process (pid {child.pid}) ended unexpectedly "
            f"(exit code {child.poll()}); build again without workers (--workers 0 in "
            "bench/reports.py, workers=0 in build_period_reports)"
        )

    def inputs(self, spans: Sequence[tuple[float, float]]) -> Iterator[PeriodInputs]:
        """The inputs of each (start, end) of `spans`, in order; a worker's error is raised
        when its period's turn comes."""
        children = self._children
        pending: deque[subprocess.Popen[bytes]] = deque()  # the worker of each open request
        upcoming = iter(enumerate(spans))

        def request() -> None:
            step = next(upcoming, None)
            if step is not None:
                child = children[step[0] % len(children)]
                self._send(child, pickle.dumps(step[1], pickle.HIGHEST_PROTOCOL))
                pending.append(child)

        for _ in range(self.ahead * len(children)):
            request()
        while pending:
            child = pending.popleft()
            assert child.stdout is not None
            try:
                status, value = pickle.load(child.stdout)
            except EOFError:
                raise WorkerFailed(self._died(child)) from None
            if status != "ok":
                text, blob = value
                raise WorkerFailed(text) if blob is None else pickle.loads(blob)
            request()
            yield value

    def close(self) -> None:
        for child in self._children:
            if child.stdin is not None:
                child.stdin.close()  # end of input: the worker returns
        for child in self._children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            if child.stdout is not None:
                child.stdout.close()
