"""Free loopback ports for the servers the tests start (chosen at run time, never from a table)."""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving(process: subprocess.Popen[bytes] | None, port: int) -> bool:
    """The server `process` is alive and accepts TCP connections on 127.0.0.1:`port`."""
    if process is not None and process.poll() is not None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
