"""Modbus RTU Source over a byte Line: a serial port or a TCP socket to a device server.

Our own master rather than pymodbus's serial client, because a half-duplex line needs
guarantees that client does not give (it matches replies on the unit id only):

- one request in flight: `read` is the only writer and runs one transaction at a time (an
  asyncio.Lock makes concurrent callers queue, though the Source contract has one caller);
- a turnaround gap: at least `turnaround` seconds of silence after the last byte on the line
  (our request or the device's reply) before the next request;
- late replies never answer the next request: before each request stray bytes are discarded,
  and after a timeout or a bad frame the line must stay silent for `late_guard` seconds
  (bytes that come meanwhile, such as the late reply, are discarded and counted, and restart
  the wait) before anything else is sent;
- a reply counts only with the right unit, function code, byte count and CRC, found at any
  offset (noise before a good reply is skipped and counted); on a serial port (`physical`) a
  reply that completes sooner than the wire time of request + reply is a stale one and is
  dropped too.

Limit, as for every RTU master: a reply later than the guard that is indistinguishable from
the awaited one (same unit, function and length) cannot be told apart; set `late_guard` above
the slowest device's worst response time.

Errors: no bytes by the deadline -> SourceTimeout; bytes but no valid reply -> SourceFrameError
(both retried `retries` times, after the guard); an exception reply -> SourceProtocolError; the
port or socket lost -> SourceLinkError (from the Line). The deadline of an attempt is the wire
time of the request and of the longest reply at the line's baud, plus `timeout`.
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
    SourceFrameError,
    SourceProtocolError,
    SourceTimeout,
)
from drivers.line import Line
from drivers.modbus_tcp import EXCEPTION_NAMES
from drivers.rtu_frame import (
    EXCEPTION_LEN,
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
    late_bytes: int = 0  # bytes discarded during the guard after a failed attempt
    stray_bytes: int = 0  # unsolicited bytes found before a request
    skipped_bytes: int = 0  # noise in front of a valid reply


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
        # The line really runs at timing.baud (a serial port, not a device server's socket):
        # a reply cannot complete sooner than the wire time, so an earlier one is stale.
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
        """True if `unit` answers at all (data or a Modbus exception): for `dust-agent scan`."""
        try:
            await self.read(block or Block(unit, "holding", 0, 1))
        except SourceProtocolError:
            return True
        except (SourceTimeout, SourceFrameError):
            return False
        return True

    async def _transact(self, block: Block, fc: int) -> Reply:
        line = self.line
        wait = self._idle_since + self.turnaround - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        stray = line.take()
        self.stats.stray_bytes += len(stray)
        full = reply_len(fc, block.count)
        t0 = time.monotonic()
        line.write(read_request(block.unit_id, fc, block.address, block.count))
        self.stats.requests += 1
        tx_s = self.timing.wire_s(REQUEST_LEN) if self.timing else 0.0
        rx_s = self.timing.gap_s + self.timing.wire_s(full) if self.timing else 0.0
        self._idle_since = t0 + tx_s
        earliest = 0.9 if self.physical else 0.0
        wire = self.timing.wire_s if self.timing else (lambda n: 0.0)
        deadline = t0 + tx_s + rx_s + self.timeout
        while True:
            buf = line.peek()
            limit = deadline
            if buf:
                reply = find_reply(buf, block.unit_id, fc, block.count)
                n = full if reply is None or reply.data is not None else EXCEPTION_LEN
                if reply is not None and line.last_rx < t0 + earliest * (tx_s + wire(n)):
                    # Complete before the wire could carry our request and its reply: this is
                    # a late reply to an earlier request. Drop it and keep waiting.
                    self.stats.late_bytes += len(line.take())
                    continue
                if reply is not None:
                    line.take()
                    self._idle_since = line.last_rx
                    self.stats.skipped_bytes += reply.skipped
                    return reply
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

    async def _guard(self) -> None:
        """Wait until the line has been silent for `late_guard`, discarding what arrives."""
        line = self.line
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
            code = int(reply.exception or 0)
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise SourceProtocolError(
                code, f"{self._where(block)}: Modbus exception {code} ({name})"
            )
        if block.table in BIT_TABLES:
            return np.array(unpack_bits(reply.data, block.count), dtype=np.uint16)
        return np.array(unpack_registers(reply.data), dtype=np.uint16)

    def _where(self, block: Block) -> str:
        return f"{self.endpoint} {block.label}"
