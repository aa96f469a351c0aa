"""The fault proxy relays bytes faithfully and breaks the link exactly as asked."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.fault_proxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_port) as relay:
        yield relay


async def _roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_relays_bytes_both_ways(proxy: FaultProxy) -> None:
    """If no fault is set, then the proxy is a transparent relay."""
    payload = bytes(range(256)) * 100
    assert await _roundtrip(proxy.port, payload) == payload
    assert proxy.bytes_up == len(payload) and proxy.bytes_down == len(payload)


async def test_pause_blackholes_then_resume_delivers(proxy: FaultProxy) -> None:
    """If the link is paused, then nothing arrives; on resume the held bytes arrive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.pause()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    proxy.resume()
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
    writer.close()


async def test_delay_postpones_delivery(proxy: FaultProxy) -> None:
    """If a delay is set, then a round trip takes at least twice the delay."""
    proxy.delay(0.2)
    started = time.monotonic()
    assert await _roundtrip(proxy.port, b"x") == b"x"
    assert time.monotonic() - started >= 0.38


async def test_close_after_n_bytes(proxy: FaultProxy) -> None:
    """If close_after(n) is set, then exactly n bytes pass and the client sees EOF."""
    proxy.close_after(5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"0123456789")
    await writer.drain()
    received = await asyncio.wait_for(reader.read(100), 2)
    rest = await asyncio.wait_for(reader.read(100), 2)
    assert received == b"01234" and rest == b""
    writer.close()


async def test_reset_sends_rst(proxy: FaultProxy) -> None:
    """If reset() is called, then the client's next read fails with a connection reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"ping"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        for _ in range(20):
            writer.write(b"more")
            await writer.drain()
            if not await asyncio.wait_for(reader.read(100), 2):
                break
    writer.close()


async def test_drop_downstream_swallows_replies(proxy: FaultProxy) -> None:
    """If downstream bytes are dropped, then requests reach the server but no reply returns."""
    proxy.drop_downstream(True)
    with pytest.raises(TimeoutError):
        await _roundtrip(proxy.port, b"lost", timeout=0.3)
    assert proxy.bytes_up == 4
    proxy.drop_downstream(False)
    assert await _roundtrip(proxy.port, b"back") == b"back"


async def test_rewrite_hook_changes_bytes(proxy: FaultProxy) -> None:
    """If a rewrite hook is set, then every chunk in that direction passes through it."""
    proxy.rewrite("downstream", lambda chunk: chunk.upper())
    assert await _roundtrip(proxy.port, b"abc") == b"ABC"


async def test_refuse_resets_new_connections(proxy: FaultProxy) -> None:
    """If refuse is on, then a new connection is reset before any byte is relayed."""
    proxy.refuse(True)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _roundtrip(proxy.port, b"x")
    assert proxy.bytes_up == 0


class _SyncEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def test_sync_context_manager() -> None:
    """If used from sync code, then the relay runs in its own thread and faults still apply."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SyncEcho)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _check_sync_relay(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _check_sync_relay(echo_port: int) -> None:
    with (
        FaultProxy("127.0.0.1", echo_port) as relay,
        socket.create_connection(relay.address, timeout=2) as sock,
    ):
        sock.sendall(b"sync")
        assert sock.recv(4) == b"sync"
        relay.pause()
        sock.sendall(b"late")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        relay.resume()
        sock.settimeout(2)
        assert sock.recv(4) == b"late"
