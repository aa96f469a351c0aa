"""The node-opcua server of server.js as a process the tests start, restart and stop.

node-opcua (pinned in package.json and package-lock.json, installed by `.ci/setup` with
`npm ci`) is a second OPC UA stack beside the simulator's asyncua servers. Each process
builds its address space, reports "initialized" in its status file, and opens its port on
the line "listen" on its stdin, reporting "listening" with the instant it did. A restart
prepares the next process while the current one still serves, then stops the current one
by its PID (SIGTERM: node-opcua's graceful shutdown; SIGKILL: a crash), waits the chosen
downtime and lets the next one listen on the same port. Each process exits by itself when
the test process dies (its stdin, a pipe from us, closes) and after `lifetime_s` anyway.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_until, wait_until_async

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "server.js"
NS_URI = "urn:tieragent:second"
# The values server.js serves that never change.
U64_MAX = 2**64 - 1
U64_TOP_BIT = 2**63
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
STILL_AGE_S = 700.0  # Still/* and Big/* last changed this long before the epoch
OLD_AGE_S = 7200.0  # Clock/Old last changed this long before the epoch
BEHIND_S = 7200.0  # Clock/Behind's source clock is this far behind
START_TIMEOUT_S = 20.0


def node_binary() -> str:
    """The `node` to run server.js with; fails the test with the fix if it is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: run `bash .ci/setup` (it installs nodejs and npm)")
    if not (HERE / "node_modules" / "node-opcua").is_dir():
        pytest.fail(f"node-opcua is not installed in {HERE}: run `bash .ci/setup` (npm ci)")
    return node


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    status: Path
    log: Path

    def reported(self, word: str) -> float | None:
        """When the process reported `word` (epoch s, its clock); None before. Fails the
        test if the process ended instead."""
        try:
            lines = self.status.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            lines = []
        for line in lines:
            fields = line.split()
            if line.endswith("\n") and fields[0] == word:
                return float(fields[1])
        if self.popen.poll() is not None:
            pytest.fail(f"server.js exited with {self.popen.returncode}:\n{self.log_tail()}")
        return None

    def listen(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"listen\n")
        self.popen.stdin.flush()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class NodeOpcUaServer:
    """server.js on 127.0.0.1:`port` (a free one by default), restartable on that port.

    `epoch` (default: now) dates the unchanged values; it stays the same across restarts,
    so a restarted server serves the same values with the same source timestamps.
    """

    def __init__(
        self, folder: Path, *, port: int | None = None, epoch: float | None = None,
        lifetime_s: float = 120.0,
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.epoch = time.time() if epoch is None else epoch
        self.lifetime_s = lifetime_s
        self.starts = 0
        self._current: _Process | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    @staticmethod
    def node(path: str) -> str:
        """The node id of a variable, by namespace URI (resolved per session)."""
        return f"nsu={NS_URI};s=Factory/{path}"

    def _spawn(self) -> _Process:
        node = node_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        status = self.folder / f"status-{self.starts}"
        log = self.folder / f"server-{self.starts}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [node, str(SCRIPT), "--port", str(self.port), "--status", str(status),
                 "--pki", str(self.folder / "pki"), "--epoch", f"{self.epoch:.3f}",
                 "--lifetime-s", str(self.lifetime_s)],
                cwd=HERE, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            )
        return _Process(popen, status, log)

    def start(self) -> float:
        """Start it and wait (blocking) until it accepts sessions; returns that instant."""
        assert self._current is None, "already running"
        process = self._current = self._spawn()
        if not wait_until(lambda: process.reported("initialized") is not None, START_TIMEOUT_S):
            self.stop(signal.SIGKILL)
            pytest.fail(f"server.js not initialized in {START_TIMEOUT_S} s:\n{process.log_tail()}")
        process.listen()
        if not wait_until(lambda: process.reported("listening") is not None, START_TIMEOUT_S):
            self.stop(signal.SIGKILL)
            pytest.fail(f"server.js not listening in {START_TIMEOUT_S} s:\n{process.log_tail()}")
        up = process.reported("listening")
        assert up is not None
        return up

    async def restart(
        self, how: signal.Signals, *, after_s: float, down_s: float
    ) -> tuple[float, float]:
        """In `after_s`, stop the running process with `how`, and start a new one on the
        same port `down_s` later: its address space is prepared meanwhile, so the downtime
        is `down_s` plus the milliseconds to open the port (the wait before the stop is
        longer if the preparation takes longer). Returns (stopped, up): when the old
        process was gone and when the new one accepted sessions. Async: the agent's event
        loop keeps running.
        """
        successor = self._spawn()
        try:
            await _sleep_until(time.time() + after_s)
            await wait_until_async(
                lambda: successor.reported("initialized") is not None, START_TIMEOUT_S
            )
            await self.stop_async(how)
        except BaseException:
            successor.popen.kill()
            successor.popen.wait(5)
            raise
        stopped = time.time()
        self._current = successor
        await _sleep_until(stopped + down_s)
        successor.listen()
        await wait_until_async(
            lambda: successor.reported("listening") is not None, START_TIMEOUT_S
        )
        up = successor.reported("listening")
        assert up is not None
        return stopped, up

    async def stop_async(self, how: signal.Signals, timeout: float = 5.0) -> None:
        """`stop` without blocking the event loop while the process shuts down."""
        process = self._current
        if process is not None and process.popen.poll() is None:
            os.kill(process.popen.pid, how)
            await wait_until_async(lambda: process.popen.poll() is not None, timeout)
        self.stop()

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Stop the process by its PID and wait for it (SIGKILL if SIGTERM is not enough)."""
        process, self._current = self._current, None
        if process is None:
            return
        popen = process.popen
        if popen.poll() is None:
            os.kill(popen.pid, how)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(timeout)
        if popen.stdin is not None:
            popen.stdin.close()

    def __enter__(self) -> NodeOpcUaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))
