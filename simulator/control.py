"""A tiny JSON-over-HTTP control endpoint for a running simulator (stdlib only).

`tieragent sim` starts it on loopback (a random free port unless told otherwise) and
prints its URL; `tieragent sim fault ...` and tests send commands to it:

    POST /fault   body: a FaultController command, e.g. {"action": "freeze", "device": "X"}
    GET  /status  the endpoints and the faults in force

Answers are JSON: {"ok": true, ...} with 200, or {"ok": false, "error": "..."} with 400
(bad command), 404, 405, 413 or 500. One request per connection. It binds loopback only
because it takes unauthenticated commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from simulator.faults import FaultController, FaultError

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 5.0

_log = logging.getLogger(__name__)


class ControlError(Exception):
    """The control endpoint could not be reached or refused the command."""


class ControlServer:
    """Serves /fault and /status for one FaultController on a loopback address."""

    def __init__(
        self,
        controller: FaultController,
        host: str = "127.0.0.1",
        port: int = 0,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the control endpoint binds loopback only, not {host!r}")
        self._controller = controller
        self._host = host
        self._port = port
        self._status = status
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._respond(reader), REQUEST_TIMEOUT_S)
        except TimeoutError:
            status, body = HTTPStatus.REQUEST_TIMEOUT, {"ok": False, "error": "request timed out"}
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        payload = json.dumps(body, sort_keys=True).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError):
            writer.write(head + payload)
            await writer.drain()
        writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[HTTPStatus, dict[str, Any]]:
        request_line = (await reader.readline()).decode("latin-1").split()
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return HTTPStatus.BAD_REQUEST, _error("bad Content-Length")
        if len(request_line) < 2:
            return HTTPStatus.BAD_REQUEST, _error("malformed request line")
        method, path = request_line[0], request_line[1]
        if length > MAX_BODY_BYTES or length < 0:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _error("body too large")
        body = await reader.readexactly(length) if length else b""
        if path == "/status":
            if method != "GET":
                return HTTPStatus.METHOD_NOT_ALLOWED, _error("use GET /status")
            state = self._status() if self._status else {}
            return HTTPStatus.OK, {"ok": True, **state, "faults": self._controller.state()}
        if path != "/fault":
            return HTTPStatus.NOT_FOUND, _error(f"no such path {path!r}; use /fault or /status")
        if method != "POST":
            return HTTPStatus.METHOD_NOT_ALLOWED, _error("use POST /fault")
        try:
            command = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return HTTPStatus.BAD_REQUEST, _error("the body is not JSON")
        if not isinstance(command, dict):
            return HTTPStatus.BAD_REQUEST, _error("the body must be a JSON object")
        try:
            return HTTPStatus.OK, await self._controller.apply(command)
        except FaultError as exc:
            return HTTPStatus.BAD_REQUEST, _error(str(exc))
        except Exception as exc:
            _log.exception("Fault command failed.")
            return HTTPStatus.INTERNAL_SERVER_ERROR, _error(f"{type(exc).__name__}: {exc}")


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def send_command(url: str, command: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """POST one command to `<url>/fault` and return the JSON answer.

    Raises ControlError with the server's message (bad command) or the network error.
    The timeout is generous because a restart command waits for the face to come back.
    """
    data = json.dumps(command).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/fault", data=data, headers={"Content-Type": "application/json"}
    )
    return _exchange(request, timeout_s)


def get_status(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET `<url>/status`. Raises ControlError."""
    return _exchange(urllib.request.Request(url.rstrip("/") + "/status"), timeout_s)


def _exchange(request: urllib.request.Request, timeout_s: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise ControlError(str(message)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlError(
            f"cannot reach the simulator control endpoint {request.full_url}: {reason}"
        ) from None
    if not isinstance(answer, dict):
        raise ControlError("the control endpoint answered something that is not a JSON object")
    return answer
