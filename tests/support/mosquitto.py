"""A real Mosquitto broker on a free loopback port, started and stopped by PID.

Tests get one per test from the `mosquitto` fixture (tests/conftest.py); a test that needs
its own configuration or TLS uses `with Broker(tmp_path, ...) as broker:`. bench/delivery.py
starts one the same way.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Self

import pytest

from tests.support.pki import Pki
from tests.support.ports import free_port, serving
from tests.support.waiting import wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A real Mosquitto on 127.0.0.1:<port>, persistence off, stopped by PID.

    With `tls`, the only listener is TLS (mqtts://) with the PKI's broker certificate;
    `require_certificate` makes it refuse clients without a certificate from that CA.
    `with Broker(...) as broker:` starts it and stops it at the end of the block; `stop()`
    and `start()` in between restart it on the same port; `freeze()`/`thaw()` SIGSTOP and
    SIGCONT it (T4).
    """

    def __init__(
        self,
        directory: Path,
        extra_conf: str = "",
        *,
        tls: Pki | None = None,
        require_certificate: bool = False,
    ) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail(
                f"mosquitto not found at {MOSQUITTO}; install it (apt-get install mosquitto)"
            )
        self.directory = directory
        self.port = free_port()
        self.extra_conf = extra_conf
        self.tls = tls
        self.require_certificate = require_certificate
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        tls = ""
        if self.tls is not None:
            # Listener options apply to the `listener` line above them. Started as root,
            # Mosquitto switches to user `mosquitto` before it reads the 0600 broker key;
            # `user` keeps it as the test's user (ignored when not started as root).
            tls = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                f"cafile {self.tls.ca}\ncertfile {self.tls.server_cert}\n"
                f"keyfile {self.tls.server_key}\n"
                f"require_certificate {str(self.require_certificate).lower()}\n"
            )
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{tls}allow_anonymous true\npersistence false\n"
            f"log_dest stderr\nlog_type error\n{self.extra_conf}\n"
        )
        self.starts += 1
        log = open(self.directory / f"mosquitto-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if not wait_until(self._listening, 10.0):
            self.stop()
            pytest.fail(f"mosquitto did not listen on port {self.port} within 10 s")

    def _listening(self) -> bool:
        return serving(self.process, self.port)

    def freeze(self) -> None:
        """SIGSTOP this broker's process: sockets stay open, nothing is read or answered."""
        assert self.process is not None and self.process.poll() is None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.thaw()  # a frozen process would not act on `sig` before the timeout
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
