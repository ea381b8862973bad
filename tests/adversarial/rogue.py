"""Misbehaving peers on loopback for the adversarial suite and bench/flood.py.

- RogueHttp: an HTTP/1.1 server whose reply `mode` is huge, bomb (gzip), trickle, evil
  (control characters), raw (any bytes the test sets) or ok; every connection counted.
- RogueBroker: speaks just enough MQTT 3.1.1 (CONNACK, SUBACK, PUBACK, PINGRESP) and pushes
  unsolicited QoS 0 PUBLISH packets as fast as the socket takes them.
- Babbler: a TCP server that writes junk bytes, forever, to whoever connects.

Each runs on the caller's event loop, in tasks it cancels on stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import Awaitable, Callable

OK_BODY = b'{"code": 200, "msg": "ok"}'
_BOMB: dict[int, bytes] = {}


def gzip_bomb(mib: int = 64) -> bytes:
    """gzip of `mib` MiB of zeros (about 1/1000 of that on the wire); cached."""
    if mib not in _BOMB:
        z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        _BOMB[mib] = b"".join(z.compress(zeros) for _ in range(mib)) + z.flush()
    return _BOMB[mib]


class _Server:
    """A loopback asyncio server whose handler tasks end with it."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.get_running_loop().create_task(self._run(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RogueHttp(_Server):
    """Answers every POST according to `mode` (changeable between requests)."""

    def __init__(self, mode: str = "ok", *, interval: float = 2.0, bomb_mib: int = 64) -> None:
        super().__init__()
        self.mode, self.interval, self.bomb_mib = mode, interval, bomb_mib
        self.raw = b""  # the whole reply in mode "raw"
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            await self._reply(writer)

    async def _reply(self, w: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode == "ok":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY))
        elif mode == "raw":
            w.write(self.raw)
        elif mode == "evil":
            body = b"denied\r\n2026-01-01 ERROR forged line\x1b[2J\x1b]0;pwned\x07" + b"x" * 5000
            w.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif mode == "bomb":
            body = gzip_bomb(self.bomb_mib)
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body
            )
        elif mode in ("huge", "huge-length"):
            size = b"Content-Length: 314572800\r\n" if mode == "huge-length" else b""
            w.write(b"HTTP/1.1 200 OK\r\n" + size + b"Connection: close\r\n\r\n")
            chunk = b"A" * 65536
            while True:  # until the client hangs up
                w.write(chunk)
                await w.drain()
        elif mode == "trickle":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while True:
                await w.drain()
                await asyncio.sleep(self.interval)
                w.write(b"{")
        await w.drain()
        if mode in ("raw", "bomb"):
            w.close()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    """One QoS 0 PUBLISH packet."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + payload
    return b"\x30" + _remaining_length(len(body)) + body


class RogueBroker(_Server):
    """CONNACK, then unsolicited PUBLISHes of `payload_size` bytes on `topic` forever; PUBACKs
    the client's QoS 1 publishes so that its uplink keeps working. `pushed` counts them."""

    def __init__(
        self, topic: str = "rogue/flood", payload_size: int = 4096, pause: float = 0.0
    ) -> None:
        super().__init__()
        self.pause = pause  # seconds between bursts of 16 packets (0: as fast as it is read)
        self.packet = mqtt_publish(topic, os.urandom(payload_size))
        self.pushed = 0
        self.acked = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flood: asyncio.Task[None] | None = None
        try:
            while True:
                first, body = await _read_packet(reader)
                kind, qos = first >> 4, (first >> 1) & 3
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                    flood = asyncio.get_running_loop().create_task(self._flood(writer))
                elif kind == 3 and qos == 1 and len(body) >= 2:  # the agent's QoS 1 PUBLISH
                    tlen = int.from_bytes(body[:2], "big")
                    pid = body[2 + tlen : 4 + tlen]
                    if len(pid) == 2:
                        writer.write(b"\x40\x02" + pid)
                        self.acked += 1
                        self.received(body[2 : 2 + tlen].decode(errors="replace"), body[4 + tlen :])
                elif kind == 8:  # SUBSCRIBE
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    return
                await writer.drain()
        finally:
            if flood is not None:
                flood.cancel()

    def received(self, topic: str, payload: bytes) -> None:
        """A QoS 1 message from the client, already PUBACKed (a hook for subclasses)."""

    async def _flood(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(self.packet * 16)
                self.pushed += 16
                await writer.drain()
                if self.pause:
                    await asyncio.sleep(self.pause)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    n, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, await reader.readexactly(n)


class Babbler(_Server):
    """Writes junk to every connection, as fast as it is read (`sent` bytes in all)."""

    def __init__(self, junk: Callable[[], bytes] | None = None, pause: float = 0.0) -> None:
        super().__init__()
        self.junk = junk or (lambda: os.urandom(4096))
        self.pause = pause  # seconds between writes
        self.sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = self.junk()
            writer.write(data)
            self.sent += len(data)
            await writer.drain()
            if self.pause:
                await asyncio.sleep(self.pause)


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Poll `check` every 20 ms until it is true; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await asyncio.sleep(0.02)
