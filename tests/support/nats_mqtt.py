"""A real NATS server (Debian's nats-server) with its MQTT face, a broker that speaks only
MQTT 3.1.1, on free loopback ports, started and stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Self

import pytest

from tests.support.ports import free_port, serving
from tests.support.waiting import wait_until

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsMqtt:
    """`with NatsMqtt(tmp_path) as broker:` a nats-server with JetStream (the MQTT face needs
    it) whose MQTT listener is `broker.url`."""

    def __init__(self, directory: Path) -> None:
        if not Path(NATS).exists():
            pytest.fail(f"nats-server not found at {NATS}; apt-get install nats-server")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        conf = self.directory / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{free_port()}\nserver_name: tieragent-test\n"
            f'jetstream {{ store_dir: "{self.directory / "jetstream"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n"
        )
        log = open(self.directory / "nats.log", "wb")
        self.process = subprocess.Popen([NATS, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if not wait_until(self._listening, 15.0):
            self.__exit__()
            pytest.fail(f"nats-server did not listen on MQTT port {self.port} within 15 s")
        return self

    def _listening(self) -> bool:
        return serving(self.process, self.port)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None
