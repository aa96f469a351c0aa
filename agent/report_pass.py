"""`python -m agent.report_pass`: build, sign and queue the reports that are due, in a
short-lived child process of `tieragent run`.

Building a report needs pandas and the tier evaluation (agent.reporter), which the collecting
process does not import: they would stay in its memory for good (about 70 MB) for a few
seconds of work a day. `ReportScheduler` (agent.service) decides which periods are due and
hands them here; the child opens its own connections to agent.db and outbox.db, builds each
period in order with `build_period_report` (each committed in its own outbox transaction, so
a kill in the middle leaves a period with one report or none), says so one JSON line per
report on stdout, and exits.

The request (configuration, paths, signing-key passphrase) travels pickled over the child's
stdin, never on its command line.
"""

from __future__ import annotations

import json
import os
import pickle
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from agent.child_env import child_env
from agent.config import FactoryConfig
from agent.errors import AgentError
from indicators.policy import PolicyFiles


class ReportPassFailed(AgentError):
    """The child could not build a report (its error), or ended without saying why."""


@dataclass(frozen=True)
class PassRequest:
    config: FactoryConfig
    config_path: Path
    store: Path
    outbox: Path
    key_dir: Path
    policy_files: PolicyFiles
    bureau_id: str
    passphrase: bytes | None
    clock_offset_s: float  # the parent's clock minus time.time() (tieragent.clock)
    keys: tuple[str, ...]  # the periods to build, in order


@dataclass(frozen=True)
class BuiltReport:
    period: str
    kind: str
    seq: int
    report_id: str
    has_data: bool


def build_in_child(request: PassRequest, stop: threading.Event,
                   on_built: Callable[[BuiltReport], None]) -> int:
    """Build `request.keys` in a child process, calling `on_built` for each report as it is
    queued; the number built. Raises ReportPassFailed with the child's error (the reports
    before it stay queued). When `stop` is set the child is ended (by its PID)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "agent.report_pass"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env=child_env(),
    )
    built = 0
    try:
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
            child.stdin.close()
        except OSError:
            pass  # it died at start: its exit code says so below
        for line in _lines(child.stdout, stop):
            answer = json.loads(line)
            if "error" in answer:
                raise ReportPassFailed(str(answer["error"]))
            on_built(BuiltReport(**answer["built"]))
            built += 1
        if stop.is_set():
            return built
        code = child.wait()
        if code != 0:
            raise ReportPassFailed(
                f"the report-building process (pid {child.pid}) ended with exit code {code}")
        return built
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _lines(stream: IO[bytes], stop: threading.Event) -> Iterator[bytes]:
    """The child's stdout lines until it closes it, or until `stop` is set."""
    fd = stream.fileno()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not stop.is_set():
            if not selector.select(0.5):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line for line in lines if line.strip())


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: read the request, build each period, one JSON line per report."""
    from agent.outbox import Outbox
    from agent.reporter import ReportContext, build_period_report
    from agent.store.store import Store

    request: PassRequest = pickle.load(stdin)

    def say(answer: dict[str, Any]) -> None:
        stdout.write(json.dumps(answer).encode() + b"\n")
        stdout.flush()

    try:
        store = Store.open(request.store, request.config)
        outbox = Outbox(request.outbox)
    except Exception as error:
        say({"error": str(error)})
        return
    try:
        offset = request.clock_offset_s
        context = ReportContext(
            config=request.config, config_path=request.config_path, store=store,
            outbox=outbox, key_dir=request.key_dir, policy=request.policy_files.load(),
            bureau_id=request.bureau_id, passphrase=request.passphrase,
            now=lambda: time.time() + offset,
        )
        for key in request.keys:
            result = build_period_report(context, key)
            say({"built": {"period": key, "kind": result.item.period_slot.split("/")[0],
                           "seq": result.item.seq, "report_id": result.item.report_id,
                           "has_data": result.has_data}})
    except Exception as error:  # a bad key file, a full disk: the parent says so and retries
        say({"error": str(error)})
    finally:
        outbox.close()
        store.close()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
