"""A userspace TCP fault proxy for tests: put it in front of a real server, then break the link.

`FaultProxy` listens on a free loopback port and relays every accepted connection to the
target. Faults can be switched on and off while connections are open:

- `pause()` / `resume()`: blackhole both directions; bytes wait (as TCP would retransmit
  them) and flow again on resume. A paused link is a half-open link from both ends.
- `delay(seconds)`: every chunk is delivered `seconds` after it was read, order kept.
- `throttle(bytes_per_s)`: each direction of each connection carries at most that rate.
- `close_after(n)`: close each connection (FIN) once `n` bytes went through it.
- `reset()`: abort every open connection with RST (SO_LINGER 0); `reset_after(n)` does it
  per connection once `n` bytes went through; `reset_in(n)` once, to the connections open
  now, after `n` more bytes (RST in the middle of the next packet: T5).
- `drop_downstream(True)`: discard server->client bytes (requests arrive, replies vanish).
- `refuse(True)`: new connections are accepted and reset at once (a closed port with a
  listening socket, as after a server crash behind a load balancer).
- `rewrite(direction, fn)`: pass every chunk through `fn` (e.g. change the Modbus
  transaction id of each reply).

Usable from async tests (`async with FaultProxy(...)`) and from sync tests (`with
FaultProxy(...)` runs the relay on a private event loop in a thread). Fault switches may be
called from any thread. The proxy touches loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

Direction = Literal["upstream", "downstream"]  # upstream = client -> server
Rewrite = Callable[[bytes], bytes]

_CHUNK = 65536
_PACED_SLICE = 256  # bytes written at a time under `throttle`


def _set_rst_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(eq=False)
class _Link:
    """One relayed connection: client side, server side and its byte count."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    relayed: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    closed: bool = False
    reset_at: tuple[int, Direction] | None = None  # one-shot `reset_in` threshold

    def abort(self, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.server):
            if rst:
                _set_rst_on_close(writer)
                writer.transport.abort()
            else:
                writer.close()


class FaultProxy:
    """TCP relay from 127.0.0.1:`port` to `target_host`:`target_port` with switchable faults."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._delay_s = 0.0
        self._rate: float | None = None
        self._close_after: tuple[int, Direction] | None = None
        self._reset_after: tuple[int, Direction] | None = None
        self._drop_downstream = False
        self._refuse = False
        self._rewrites: dict[Direction, Rewrite | None] = {"upstream": None, "downstream": None}
        self.accepted = 0  # connections accepted so far
        self.resets_done = 0  # one-shot `reset_in` resets made
        self.bytes_up = 0
        self.bytes_down = 0

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)

    async def stop(self) -> None:
        """Stop listening and abort every open connection (RST)."""
        if self._server is not None:
            self._server.close()
        tasks = [task for link in self._links for task in link.tasks]
        self._abort_all(rst=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run the relay on a private event loop in a daemon thread (for sync tests)."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fault proxy did not start within 5 s")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- fault switches (thread-safe) --------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    def pause(self) -> None:
        """Blackhole both directions until `resume()`; nothing is lost, nothing is closed."""
        self._call(self._require_flowing().clear)

    def resume(self) -> None:
        self._call(self._require_flowing().set)

    def delay(self, seconds: float) -> None:
        """Deliver each chunk `seconds` after it was read (0 turns the delay off)."""
        self._delay_s = max(0.0, seconds)

    def throttle(self, bytes_per_s: float | None) -> None:
        """Pace each direction of each connection to `bytes_per_s` (None: no limit)."""
        self._rate = bytes_per_s

    def close_after(self, n_bytes: int | None, direction: Direction = "downstream") -> None:
        """Close each connection (FIN) once `n_bytes` went `direction` through it.

        The chunk crossing the threshold is cut, so exactly `n_bytes` arrive. None disables.
        """
        self._close_after = None if n_bytes is None else (n_bytes, direction)

    def reset_after(self, n_bytes: int | None, direction: Direction = "downstream") -> None:
        """Reset each connection (RST) once `n_bytes` went `direction` through it."""
        self._reset_after = None if n_bytes is None else (n_bytes, direction)

    def reset_in(self, n_bytes: int, direction: Direction = "upstream") -> None:
        """Reset each connection open now (RST) once `n_bytes` more went `direction` through
        it; connections opened later are untouched. `resets_done` counts the resets made."""

        def arm() -> None:
            for link in self._links:
                if not link.closed:
                    link.reset_at = (link.relayed[direction] + n_bytes, direction)

        self._call(arm)

    def reset(self) -> None:
        """Abort every open connection with RST now."""
        self._call(lambda: self._abort_all(rst=True))

    def drop_downstream(self, enabled: bool = True) -> None:
        """Discard server->client bytes while enabled."""
        self._drop_downstream = enabled

    def refuse(self, enabled: bool = True) -> None:
        """Reset new connections at once while enabled (existing ones are untouched)."""
        self._refuse = enabled

    def rewrite(self, direction: Direction, fn: Rewrite | None) -> None:
        """Pass every chunk going `direction` through `fn`; None removes the hook."""
        self._rewrites[direction] = fn

    @property
    def open_connections(self) -> int:
        return sum(1 for link in self._links if not link.closed)

    # --- relay -------------------------------------------------------------------------

    def _require_flowing(self) -> asyncio.Event:
        if self._flowing is None:
            raise RuntimeError("the proxy is not started")
        return self._flowing

    def _abort_all(self, rst: bool) -> None:
        for link in list(self._links):
            self._abort(link, rst)

    def _abort(self, link: _Link, rst: bool) -> None:
        link.abort(rst)
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refuse:
            _set_rst_on_close(writer)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            # The target is down: behave like it, reset the client.
            _set_rst_on_close(writer)
            writer.transport.abort()
            return
        link = _Link(client=writer, server=up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, "upstream")),
            asyncio.create_task(self._pump(link, up_reader, writer, "downstream")),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(link, queue, writer, direction))
        try:
            while not link.closed:
                try:
                    chunk = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    chunk = b""
                if not chunk:
                    break
                await queue.put((time.monotonic() + self._delay_s, chunk))
        finally:
            await queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await deliver

    async def _write(self, writer: asyncio.StreamWriter, chunk: bytes) -> None:
        """Write `chunk`, in slices paced to the throttle rate when one is set."""
        if self._rate is None:
            writer.write(chunk)
            await writer.drain()
            return
        for start in range(0, len(chunk), _PACED_SLICE):
            piece = chunk[start : start + _PACED_SLICE]
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(len(piece) / self._rate)

    async def _deliver(
        self,
        link: _Link,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        assert self._flowing is not None
        while True:
            item = await queue.get()
            if item is None:
                # The reading side ended (FIN or error): pass the close on.
                self._abort(link, rst=False)
                return
            due, chunk = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            if link.closed:
                return
            if direction == "downstream" and self._drop_downstream:
                continue
            hook = self._rewrites[direction]
            if hook is not None:
                chunk = hook(chunk)
            if direction == "upstream":
                self.bytes_up += len(chunk)
            else:
                self.bytes_down += len(chunk)
            limits: list[tuple[int, bool]] = []  # (threshold, reset?)
            if self._reset_after is not None and self._reset_after[1] == direction:
                limits.append((self._reset_after[0], True))
            if self._close_after is not None and self._close_after[1] == direction:
                limits.append((self._close_after[0], False))
            if link.reset_at is not None and link.reset_at[1] == direction:
                limits.append((link.reset_at[0], True))
            # Cut the chunk at the nearest threshold so exactly N bytes go through.
            room = min((n for n, _ in limits), default=None)
            if room is not None:
                chunk = chunk[: max(0, room - link.relayed[direction])]
            link.relayed[direction] += len(chunk)
            try:
                await self._write(writer, chunk)
            except (ConnectionError, OSError):
                self._abort(link, rst=False)
                return
            for n_bytes, rst in sorted(limits):
                if link.relayed[direction] >= n_bytes:
                    if link.reset_at is not None and link.reset_at[0] == n_bytes:
                        self.resets_done += 1
                    self._abort(link, rst=rst)
                    return
