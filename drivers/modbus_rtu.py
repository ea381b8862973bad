"""Modbus RTU Source over a byte Line: a serial port or a TCP socket to a device server.

Our own master rather than pymodbus's serial client, because a half-duplex line needs
guarantees that client does not give (it matches replies on the unit id only).

Accepting a reply: trust the frame, not the clock. A reply is taken the moment a complete
frame with the right unit, function code, byte count and CRC is in the buffer (found at any
offset: noise in front is skipped and counted), however fast it came. Virtual serial ports,
buffering USB adapters and serial-over-IP tools deliver replies with timings unlike the wire
(pymodbus's own RTU slave on a pty answers in 1-2 ms where 9600 baud needs 30 ms), so no
reply is ever judged by when it arrived.

Why a late reply is never taken as the answer to the next request: the guard rests on what
the line shows.

- one request in flight: `read` is the only writer and runs one transaction at a time (an
  asyncio.Lock makes concurrent callers queue, though the Source contract has one caller);
- a request window: from our request to its reply (or deadline). A request is sent only when
  the buffer is empty;
- bytes outside a request window (found before a request, or trailing a reply) and frames in
  the window that do not match (another unit, function or length, a bad CRC, noise before the
  reply) show that something else is talking, e.g. a slow device answering an old request:
  the master then waits until the line has been silent for `late_guard` seconds (bytes that
  arrive meanwhile restart the wait and are discarded and counted) before the next request;
- after a failed attempt (no answer by the deadline, or no valid frame) the same silence of
  `late_guard` is required. A reply to a timed-out request therefore either arrives within
  the guard (discarded) or after `timeout` + `late_guard` of silence.

Limit, as for every RTU master (RTU frames carry no transaction id): a device whose reply
comes later than `timeout` + `late_guard` of silence, to a request of the same unit, function
and length as the next one, cannot be told apart. Set `late_guard` so that `timeout` +
`late_guard` exceeds the slowest device's worst response time.

Other rules: a turnaround gap of at least `turnaround` seconds of silence after the last byte
on the line before the next request.

Errors: no bytes by the deadline -> SourceTimeout; bytes but no valid reply -> SourceFrameError
(both retried `retries` times, after the guard); an exception reply -> drivers.base
`exception_error` (SourceProtocolError, SourceBusy or SourceDeviceFailure); the port or socket
lost -> SourceLinkError (from the Line). The deadline of an attempt is the wire time of the
request and of the longest reply at the line's baud, plus `timeout`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from drivers.base import (
    BIT_TABLES,
    Block,
    RawBlock,
    SourceDeviceFailure,
    SourceFrameError,
    SourceProtocolError,
    SourceTimeout,
    exception_error,
)
from drivers.line import Line
from drivers.rtu_frame import (
    REQUEST_LEN,
    TABLE_FC,
    LineTiming,
    Reply,
    find_reply,
    read_request,
    reply_len,
    unpack_bits,
    unpack_registers,
)


@dataclass(slots=True)
class RtuStats:
    """Counters since start; every discarded byte is counted."""

    requests: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    late_bytes: int = 0  # bytes discarded while waiting for the line to be silent
    stray_bytes: int = 0  # bytes outside a request window (before a request, after a reply)
    skipped_bytes: int = 0  # noise or a non-matching frame in front of a valid reply
    guards: int = 0  # waits for a silent line (after a failure or unexpected bytes)


class ModbusRtuSource:
    """One RTU line (serial or RTU over TCP) and every unit on it."""

    def __init__(
        self,
        line: Line,
        *,
        timeout: float,
        retries: int,
        timing: LineTiming | None,
        turnaround: float | None = None,
        late_guard: float | None = None,
        name: str = "",
        physical: bool = False,
    ) -> None:
        self.line = line
        # The line is a serial port (not a device server's socket). Informative only: no reply
        # is judged by its timing (see the module docstring).
        self.physical = physical
        self.timeout = timeout
        self.retries = retries
        self.timing = timing
        # With no known baud (a device server's serial side), no wire time is added.
        self.turnaround = turnaround if turnaround is not None else (timing.gap_s if timing else 0)
        self.late_guard = late_guard if late_guard is not None else timeout
        self.name = name or line.name
        self.stats = RtuStats()
        # How long a half-received frame may pause before it is judged complete.
        self._frame_quiet = max(2 * timing.gap_s, 0.02) if timing else 0.05
        self._lock = asyncio.Lock()
        self._idle_since = 0.0  # monotonic end of the last activity on the line
        self._suspect = False  # the line showed unexpected bytes: be silent before sending

    @property
    def connected(self) -> bool:
        return self.line.is_open

    @property
    def endpoint(self) -> str:
        return f"{self.line.name} (bus {self.name!r})"

    async def connect(self) -> None:
        if not self.line.is_open:
            await self.line.open()
            self._idle_since = time.monotonic()

    async def close(self) -> None:
        self.line.close()

    async def read(self, block: Block) -> RawBlock:
        fc = TABLE_FC[block.table]
        async with self._lock:
            last: SourceTimeout | SourceFrameError | None = None
            for _ in range(self.retries + 1):
                try:
                    reply = await self._transact(block, fc)
                except (SourceTimeout, SourceFrameError) as exc:
                    last = exc
                    await self._guard()
                    continue
                t_wall, t_mono = time.time(), time.monotonic()
                return RawBlock(block, self._values(block, reply), t_wall, t_mono)
            assert last is not None
            raise last

    async def probe(self, unit: int, block: Block | None = None) -> bool:
        """True if `unit` answers (data or an exception other than 4, 10, 11): for scans."""
        try:
            await self.read(block or Block(unit, "holding", 0, 1))
        except SourceProtocolError:
            return True
        except (SourceTimeout, SourceFrameError, SourceDeviceFailure):
            return False
        return True

    async def _transact(self, block: Block, fc: int) -> Reply:
        line = self.line
        await self._ready()
        full = reply_len(fc, block.count)
        t0 = time.monotonic()
        line.write(read_request(block.unit_id, fc, block.address, block.count))
        self.stats.requests += 1
        tx_s = self.timing.wire_s(REQUEST_LEN) if self.timing else 0.0
        rx_s = self.timing.gap_s + self.timing.wire_s(full) if self.timing else 0.0
        self._idle_since = t0 + tx_s
        deadline = t0 + tx_s + rx_s + self.timeout
        while True:
            buf = line.peek()
            limit = deadline
            if buf:
                reply = find_reply(buf, block.unit_id, fc, block.count)
                if reply is not None:
                    return self._accept(reply, len(buf))
                if len(buf) >= full:  # enough bytes for the reply, none valid: wait for quiet
                    limit = min(deadline, line.last_rx + self._frame_quiet)
            if not await line.wait_rx(limit):
                break
        junk = line.peek()
        if junk:
            self.stats.frame_errors += 1
            raise SourceFrameError(
                f"{self._where(block)}: {len(junk)} bytes but no valid reply "
                "(CRC error, noise or a reply to another request)"
            )
        self.stats.timeouts += 1
        raise SourceTimeout(f"{self._where(block)}: no answer within {self.timeout:g} s")

    def _accept(self, reply: Reply, received: int) -> Reply:
        """Take the reply off the line; anything around it makes the next request wait."""
        self.line.take()
        self._idle_since = self.line.last_rx
        trailing = received - reply.end
        self.stats.skipped_bytes += reply.skipped
        self.stats.stray_bytes += trailing
        if reply.skipped or trailing:
            self._suspect = True
        return reply

    async def _ready(self) -> None:
        """Turnaround, and a silent line: bytes outside a request window (or seen around the
        last reply) make us wait for `late_guard` of silence before sending."""
        await self._turnaround()
        if self._suspect or self.line.peek():
            self._suspect = False
            self.stats.stray_bytes += len(self.line.take())
            await self._guard()
            await self._turnaround()
        self.stats.stray_bytes += len(self.line.take())  # babble within the turnaround

    async def _turnaround(self) -> None:
        wait = self._idle_since + self.turnaround - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _guard(self) -> None:
        """Wait until the line has been silent for `late_guard`, discarding what arrives."""
        line = self.line
        self.stats.guards += 1
        now = time.monotonic()
        cap = now + max(4 * self.late_guard, 1.0)  # a babbling line cannot hold us forever
        quiet_until = now + self.late_guard
        while now < cap:
            if await line.wait_rx(min(quiet_until, cap)):
                quiet_until = line.last_rx + self.late_guard
            elif time.monotonic() >= quiet_until:
                break
            now = time.monotonic()
        self.stats.late_bytes += len(line.take())
        self._idle_since = time.monotonic()

    def _values(self, block: Block, reply: Reply) -> np.ndarray[tuple[int], np.dtype[np.uint16]]:
        if reply.data is None:
            raise exception_error(int(reply.exception or 0), self._where(block))
        if block.table in BIT_TABLES:
            return np.array(unpack_bits(reply.data, block.count), dtype=np.uint16)
        return np.array(unpack_registers(reply.data), dtype=np.uint16)

    def _where(self, block: Block) -> str:
        return f"{self.endpoint} {block.label}"
