"""Byte lines for RTU framing: a serial port (pyserial) or a TCP socket to a device server.

The one module that imports pyserial. A line only moves bytes: it buffers what arrives and
wakes a waiter; it knows nothing of Modbus. Contract: one owner (the RTU master); `open()`
raises SourceLinkError with installer advice; after the port or socket is lost every call
raises SourceLinkError until `open()` succeeds again; `close()` is idempotent.

The receive buffer is bounded (RX_LIMIT bytes, far above the 256-byte largest RTU frame): a
babbling device or device server can never grow memory; the oldest bytes are dropped and
counted in `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from typing import Protocol

import serial

from drivers.base import SourceLinkError
from drivers.rtu_frame import Parity

RX_LIMIT = 4096  # bytes kept in a line's receive buffer (16 of the longest RTU frames)


class Line(Protocol):
    """A half-duplex byte pipe with a receive buffer."""

    name: str

    @property
    def is_open(self) -> bool: ...

    async def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def take(self) -> bytes:
        """Everything received so far (the buffer is emptied)."""
        ...

    def peek(self) -> bytes: ...

    @property
    def dropped(self) -> int:
        """Bytes dropped since start because the receive buffer was full."""
        ...

    @property
    def last_rx(self) -> float:
        """time.monotonic() of the last received chunk (0 if none)."""
        ...

    async def wait_rx(self, deadline: float) -> bool:
        """Wait for bytes not seen yet (True) or until `deadline` (monotonic; False)."""
        ...


class _Buffered:
    """Receive buffer, wake-up and loss state shared by both line kinds."""

    name: str

    def __init__(self) -> None:
        self._rx = bytearray()
        self._seen = 0
        self._last_rx = 0.0
        self._wake: asyncio.Event | None = None
        self._lost: str | None = None
        self._dropped = 0

    def _received(self, data: bytes) -> None:
        self._rx += data
        over = len(self._rx) - RX_LIMIT
        if over > 0:  # keep the newest bytes: a reply is at the end, never at the start
            del self._rx[:over]
            self._dropped += over
            self._seen = max(0, self._seen - over)
        self._last_rx = time.monotonic()
        if self._wake is not None:
            self._wake.set()

    def _set_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        if self._wake is not None:
            self._wake.set()

    def _check(self) -> None:
        if self._lost is not None:
            raise SourceLinkError(f"{self.name}: {self._lost}")

    @property
    def last_rx(self) -> float:
        return self._last_rx

    @property
    def dropped(self) -> int:
        return self._dropped

    def take(self) -> bytes:
        self._check()
        data = bytes(self._rx)
        self._rx.clear()
        self._seen = 0
        return data

    def peek(self) -> bytes:
        self._check()
        return bytes(self._rx)

    async def wait_rx(self, deadline: float) -> bool:
        self._check()
        if len(self._rx) > self._seen:
            self._seen = len(self._rx)
            return True
        wake = self._wake = asyncio.Event()
        timeout = deadline - time.monotonic()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
        self._check()
        grew = len(self._rx) > self._seen
        self._seen = len(self._rx)
        return grew


class SerialLine(_Buffered):
    """A serial port (USB-RS485 adapter, on-board UART, a pty in tests), read by the event loop.

    Use `/dev/serial/by-id/...` paths: `/dev/ttyUSB0` can become `ttyUSB1` after a replug,
    the by-id name stays the same, and `open()` after a loss finds the port again.
    """

    def __init__(
        self,
        port: str,
        baud: int,
        *,
        bytesize: int = 8,
        parity: Parity = "N",
        stopbits: int = 1,
        name: str = "",
    ) -> None:
        super().__init__()
        self.port = port
        self.baud = baud
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.name = name or f"serial {port}"
        self._serial: serial.Serial | None = None
        self._fd = -1

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._lost is None

    async def open(self) -> None:
        self.close()
        try:
            ser = serial.Serial(
                port=self.port,
                baudrate=self.baud,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceLinkError(f"cannot open {self.name}: {_serial_advice(exc)}") from exc
        self._serial = ser
        self._fd = ser.fileno()
        self._lost = None
        self._rx.clear()
        self._seen = 0
        ser.reset_input_buffer()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError as exc:
            data = b""
            reason = f"port lost ({exc.strerror})"
        else:
            reason = "port lost (end of file: adapter unplugged?)"
        if data:
            self._received(data)
            return
        asyncio.get_running_loop().remove_reader(self._fd)
        self._set_lost(reason)

    def write(self, data: bytes) -> None:
        self._check()
        if self._serial is None:
            raise SourceLinkError(f"{self.name} is not open")
        try:
            n = os.write(self._fd, data)
        except OSError as exc:
            self._set_lost(f"port lost on write ({exc.strerror})")
            self._check()
            return
        if n != len(data):
            raise SourceLinkError(f"{self.name}: short write ({n} of {len(data)} bytes)")

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(Exception):
            ser.close()
        self._fd = -1


def _serial_advice(exc: BaseException) -> str:
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.ENOENT or "No such file" in text:
        return (
            "no such port (adapter unplugged? use the stable /dev/serial/by-id/... path; "
            "`ls /dev/serial/by-id/` lists them)"
        )
    if err == errno.EACCES or "Permission denied" in text:
        return "permission denied (the service user needs the dialout group)"
    if err == errno.EBUSY or "lock" in text.lower():
        return "port in use by another program"
    return text


def _tcp_reason(exc: OSError) -> str:
    """Why a connect failed, in words (asyncio's own text is "Connect call failed (...)")."""
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host or network unreachable"
    return (os.strerror(exc.errno) if exc.errno else None) or str(exc)


class _TcpProtocol(asyncio.Protocol):
    """Forwards to the line only while its transport is the line's current one: callbacks of a
    socket closed by an earlier `close()` never touch a newer connection."""

    def __init__(self, line: TcpLine) -> None:
        self.line = line
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def _current(self) -> bool:
        return self.line._transport is None or self.line._transport is self.transport

    def data_received(self, data: bytes) -> None:
        if self._current():
            self.line._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.line._transport is self.transport:
            self.line._set_lost(f"connection lost ({exc or 'closed by the device server'})")


class TcpLine(_Buffered):
    """A TCP socket to a serial device server (RTU over TCP: raw RTU frames in the stream)."""

    def __init__(self, host: str, port: int, *, connect_timeout: float, name: str = "") -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.name = name or f"RTU over TCP {host}:{port}"
        self._transport: asyncio.Transport | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._lost is None

    async def open(self) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpProtocol(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise SourceLinkError(
                f"cannot connect to {self.name}: no answer within {self.connect_timeout:g} s "
                "— check the address and that the device server is powered"
            ) from exc
        except OSError as exc:
            raise SourceLinkError(
                f"cannot connect to {self.name}: {_tcp_reason(exc)} — check the address, "
                "the port and the device server's TCP server mode"
            ) from exc
        self._transport = transport
        self._lost = None
        self._rx.clear()
        self._seen = 0

    def write(self, data: bytes) -> None:
        self._check()
        if self._transport is None:
            raise SourceLinkError(f"{self.name} is not connected")
        self._transport.write(data)

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
