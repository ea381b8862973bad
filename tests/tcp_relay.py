"""A loopback TCP relay between a driver and a device server, for faults a server cannot make.

The driver connects to the relay; each connection is piped to the server (`upstream`). The
relay can hold the server's next replies back (a late reply, delivered later on the same
connection with its bytes unchanged), send stray bytes to the driver, drop every connection
(a cable pulled), and stop listening (the device powered off) and listen again on the same
port. Bytes are never changed: a transaction id or CRC stays what the server sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine


class _Pipe:
    """One driver connection and its connection to the server."""

    def __init__(self, relay: TcpRelay, client: asyncio.StreamWriter) -> None:
        self.relay = relay
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def spawn(self, coro: Coroutine[None, None, None], name: str) -> None:
        tasks = self.relay.tasks
        task = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def to_server(self, reader: asyncio.StreamReader) -> None:
        assert self.upstream is not None
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                self.upstream.write(data)
        self.close()

    async def to_client(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                hold = self.relay.holds.popleft() if self.relay.holds else 0.0
                if hold > 0:
                    self.spawn(self._later(hold, data), "relay-late-reply")
                else:
                    self.client.write(data)
        self.close()

    async def _later(self, hold: float, data: bytes) -> None:
        await asyncio.sleep(hold)
        if not self.client.is_closing():
            self.client.write(data)
            self.relay.late_sent += 1

    def close(self) -> None:
        self.relay.pipes.discard(self)
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class TcpRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.holds: deque[float] = deque()  # seconds to hold each next server chunk back
        self.late_sent = 0
        self._server: asyncio.Server | None = None
        self.pipes: set[_Pipe] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def hold_replies(self, *seconds: float) -> None:
        """Deliver the server's next replies (one chunk each) that many seconds late."""
        self.holds.extend(seconds)

    def inject(self, data: bytes) -> int:
        """Send stray bytes to every connected driver; returns how many got them."""
        for pipe in self.pipes:
            pipe.client.write(data)
        return len(self.pipes)

    @property
    def connections(self) -> int:
        return len(self.pipes)

    async def start(self) -> None:
        """Listen (on the previous port after a stop)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def drop(self) -> None:
        """Abort every connection; keep listening."""
        for pipe in list(self.pipes):
            pipe.close()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop()
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pipe = _Pipe(self, writer)
        try:
            up_reader, pipe.upstream = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        self.pipes.add(pipe)
        pipe.spawn(pipe.to_server(reader), "relay-to-server")
        pipe.spawn(pipe.to_client(up_reader), "relay-to-client")
