"""The bus task: reads a BusPlan's blocks every poll interval and emits one Frame per cycle.

Modbus exceptions as the specification means them (the drivers translate the codes):

- 5 (acknowledge), 6 (device busy), SourceBusy: the device is alive; that request is sent again
  after the bus's `busy_delay`, at most `busy_retries` times within the cycle. If it stays
  busy, its points carry quality BUSY and the device is "degraded" until a cycle without it;
- 4 (device failure), 10, 11 (the gateway cannot reach the device behind it),
  SourceDeviceFailure: a failure of that device, like no answer (toward quarantine and
  comm_loss), quality COMM_FAIL;
- 1, 2, 3 and the others: protocol errors, quality PROTOCOL; 2 (illegal data address) starts
  the search for the offending register (agent.source.split).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from agent.core.backoff import Backoff
from agent.core.model import Frame, Quality
from agent.source.plan import BusPlan
from agent.source.quarantine import DeviceHealth
from agent.source.split import ILLEGAL_ADDRESS, BlockSplitter, ReadOp
from drivers.base import (
    Block,
    RawBlock,
    Source,
    SourceBusy,
    SourceDeviceFailure,
    SourceError,
    SourceFrameError,
    SourceLinkError,
    SourceProtocolError,
    SourceTimeout,
)

log = logging.getLogger(__name__)

_COMM_FAIL = np.uint8(Quality.COMM_FAIL)
_PROTOCOL = np.uint8(Quality.PROTOCOL)
_BAD_VALUE = np.uint8(Quality.BAD_VALUE)
_UNSYNCED = np.uint8(Quality.CLOCK_UNSYNCED)
_BUSY = np.uint8(Quality.BUSY)


@dataclass(slots=True)
class PollerStats:
    """Counters since start. `reconnects` counts successful re-opens after a link loss."""

    cycles: int = 0
    reads_ok: int = 0
    timeouts: int = 0
    protocol_errors: int = 0
    link_errors: int = 0
    frame_errors: int = 0  # bytes came back but no valid reply (RTU: CRC, noise)
    overruns: int = 0
    reconnects: int = 0
    busy_replies: int = 0  # exception 5/6 replies, each followed by a retry or a BUSY result
    busy_failures: int = 0  # requests still busy after every retry of the cycle
    device_failures: int = 0  # exception 4, 10, 11: the device (or its gateway path) failed
    split_requests: int = 0  # extra requests spent finding illegal addresses


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A unit on a bus stopped answering (quarantined) or answers again."""

    bus: str
    unit: int
    devices: tuple[str, ...]  # config device names on that unit
    lost: bool
    ts: float  # wall clock of the transition
    reason: str


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A bus's link (serial port, TCP socket) was lost or could not be opened (`down`), or is
    open again after such an outage: one of each per outage, never one per retry."""

    bus: str
    down: bool
    ts: float  # wall clock of the transition
    reason: str  # down: why (the driver's message); up: ""
    outage_s: float = 0.0  # up: how long the link was down (monotonic seconds)


class BusPoller:
    """Polls one bus. `run()` owns the source: it connects, reconnects, and closes it on exit.

    Every cycle emits exactly one Frame covering all the plan's points, whatever failed.
    Dead units are quarantined (agent.source.quarantine) and reported through `on_device`, a lost
    link and its return through `on_link` (both called from the bus task); a block
    that gets an illegal-address exception is searched once for the offending points
    (agent.source.split), which are marked bad (quality PROTOCOL, no longer read) while the rest
    is read as before.
    """

    def __init__(
        self,
        plan: BusPlan,
        source: Source,
        emit: Callable[[Frame], Awaitable[None]],
        *,
        clock_synced: Callable[[], bool] = lambda: True,
        backoff: Backoff | None = None,
        on_device: Callable[[DeviceChange], None] | None = None,
        on_link: Callable[[LinkChange], None] | None = None,
    ) -> None:
        bus = plan.bus
        if bus.poll_interval <= 0:
            raise ValueError(f"bus {bus.name!r}: poll_interval must be > 0")
        self.plan = plan
        self.source = source
        self.stats = PollerStats()
        self._emit = emit
        self._clock_synced = clock_synced
        self._on_device = on_device
        self._on_link = on_link
        self._backoff = backoff or Backoff(0.5, 30.0, 60.0, jitter="equal")
        self.health = DeviceHealth(bus.quarantine_after, bus.quarantine_first, bus.quarantine_max)
        n = len(plan.point_index)
        self._buffer = np.zeros(plan.buffer_size, dtype=np.uint16)
        self._q = np.full(n, _COMM_FAIL, dtype=np.uint8)
        self._ts = np.zeros(n, dtype=np.float64)
        self._bad = np.zeros(n, dtype=bool)  # illegal address: no longer read
        self._any_bad = False
        # built once; replaced (not changed in place) when a split finds illegal addresses
        self._ops: tuple[ReadOp, ...] = tuple(
            ReadOp(blk, plan.block_offsets[b], np.flatnonzero(plan.point_block == b))
            for b, blk in enumerate(plan.blocks)
        )
        self._failing: dict[Block, int] = {}  # consecutive failed cycles per request
        self._busy_units: set[int] = set()  # units with a request still busy this cycle
        self._next_connect = 0.0  # monotonic time of the next (re)connect attempt
        self._link_down_since: float | None = None  # monotonic, while the link is down
        self._ever_connected = False

    async def run(self) -> None:
        """Poll every bus.poll_interval on the monotonic clock until cancelled."""
        interval = self.plan.bus.poll_interval
        slot = time.monotonic()
        try:
            while True:
                await self.poll_once()
                _honour_cancel()
                slot += interval
                now = time.monotonic()
                if now > slot:  # overran: skip the missed slots, never run cycles back to back
                    self.stats.overruns += 1
                    slot += math.ceil((now - slot) / interval) * interval
                await asyncio.sleep(slot - now)
        finally:
            await self.source.close()

    async def poll_once(self) -> Frame:
        """One cycle: (re)connect if due, read every due request, decode, emit the frame."""
        if not self.source.connected:
            await self._try_connect()
        if self._any_bad:
            self._q[self._bad] = _PROTOCOL
            self._ts[self._bad] = time.time()
        link_failed: set[int] = set()
        polled: set[int] = set()
        self._busy_units.clear()
        for op in self._ops:  # a split during the cycle replaces the tuple, not this one
            unit = op.block.unit_id
            if not self.source.connected:
                self._mark(op, _COMM_FAIL, time.time())
                link_failed.add(unit)
                continue
            if self.health.skip(unit, time.monotonic()):
                self._mark(op, _COMM_FAIL, time.time())
                continue
            polled.add(unit)
            await self._read(op)
            _honour_cancel()
        for unit in polled:
            self.health.note_busy(unit, unit in self._busy_units)
        now = time.monotonic()
        for unit in sorted(link_failed):  # a line that stays down quarantines its devices too
            if not self.health.quarantined(unit):
                self._changed(unit, self.health.failed(unit, now), "the line is down")
        frame = self._build_frame()
        self.stats.cycles += 1
        await self._emit(frame)
        return frame

    async def _read(self, op: ReadOp) -> None:
        unit = op.block.unit_id
        t_try = time.time()
        try:
            raw = await self._request(op.block)
        except SourceBusy as exc:
            self._busy(op, t_try, exc)
        except (SourceTimeout, SourceFrameError, SourceDeviceFailure) as exc:
            if isinstance(exc, SourceTimeout):
                self.stats.timeouts += 1
            elif isinstance(exc, SourceFrameError):
                self.stats.frame_errors += 1
            else:
                self.stats.device_failures += 1
            self._mark(op, _COMM_FAIL, t_try)
            self._changed(unit, self.health.failed(unit, time.monotonic()), str(exc))
        except SourceProtocolError as exc:
            self.stats.protocol_errors += 1
            self._changed(unit, self.health.answered(unit), "")
            if exc.code == ILLEGAL_ADDRESS:
                await self._split(op, t_try)
            else:
                self._mark(op, _PROTOCOL, t_try)
                self._op_failed(op, str(exc))
        except SourceLinkError as exc:
            self.stats.link_errors += 1
            self._mark(op, _COMM_FAIL, t_try)
            await self._link_lost(str(exc))
        else:
            self._store(op, raw)
            self._changed(unit, self.health.answered(unit), "")
            if self._failing.get(op.block):
                self._op_recovered(op)

    async def _request(self, block: Block) -> RawBlock:
        """One read; a busy reply (exception 5/6) is retried after busy_delay, busy_retries
        times at most (bounded within the cycle)."""
        bus = self.plan.bus
        for attempt in range(bus.busy_retries + 1):
            try:
                return await self.source.read(block)
            except SourceBusy:
                self.stats.busy_replies += 1
                if attempt == bus.busy_retries:
                    raise
            await asyncio.sleep(bus.busy_delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _busy(self, op: ReadOp, t_try: float, exc: SourceBusy) -> None:
        unit = op.block.unit_id
        self.stats.busy_failures += 1
        self._busy_units.add(unit)
        self._mark(op, _BUSY, t_try)
        self._changed(unit, self.health.answered(unit), "")  # busy is alive
        self._op_failed(op, f"{exc} (still busy after {self.plan.bus.busy_retries} retries)")

    def _store(self, op: ReadOp, raw: RawBlock) -> None:
        self._buffer[op.offset : op.offset + op.block.count] = raw.registers
        self._mark(op, np.uint8(0), raw.t_wall)
        self.stats.reads_ok += 1

    def _mark(self, op: ReadOp, q: np.uint8, t: float) -> None:
        self._q[op.pos] = q
        self._ts[op.pos] = t

    def _outcome(self, op: ReadOp, result: RawBlock | SourceError) -> None:
        """Store or mark the result of one request made while searching a refused block."""
        if isinstance(result, RawBlock):
            self._store(op, result)
        elif isinstance(result, SourceBusy):
            self._busy_units.add(op.block.unit_id)
            self._mark(op, _BUSY, time.time())
        elif isinstance(result, SourceProtocolError):
            self._mark(op, _PROTOCOL, time.time())
        else:
            self._mark(op, _COMM_FAIL, time.time())

    async def _split(self, op: ReadOp, t_try: float) -> None:
        """Find the points behind "illegal data address" in `op` (agent.source.split)."""
        res = await BlockSplitter(self.plan, self._request, self._outcome).split(op)
        self.stats.split_requests += res.requests
        i = self._ops.index(op)
        self._ops = (*self._ops[:i], *res.good, *self._ops[i + 1 :])
        bad_pos = np.array(res.bad, dtype=np.intp)
        self._bad[bad_pos] = True
        self._any_bad = bool(self._bad.any())
        self._q[bad_pos] = _PROTOCOL
        self._ts[bad_pos] = t_try
        names = ", ".join(
            f"{self.plan.point_keys[i]} ({op.block.table} {int(self.plan.point_address[i])})"
            for i in sorted(res.bad)
        )
        log.warning(
            "bus %r %s: illegal data address; point(s) %s marked bad and no longer read "
            "(check table and address in the register map, or declare the register in "
            "holes); the other %d point(s) are read in %d request(s); %d extra request(s) "
            "to find it",
            self.plan.bus.name,
            op.block.label,
            names or "(none: only the gap registers)",
            len(op.pos) - len(res.bad),
            len(res.good),
            res.requests,
        )

    def _changed(self, unit: int, change: str | None, reason: str) -> None:
        if change is None:
            return
        devices = self.plan.unit_devices.get(unit, ())
        bus = self.plan.bus
        lost = change == "lost"
        if lost:
            log.warning(
                "bus %r unit %d (%s) not answering, quarantined (retried every %g..%g s): %s",
                bus.name,
                unit,
                ", ".join(devices),
                bus.quarantine_first,
                bus.quarantine_max,
                reason,
            )
        else:
            log.info("bus %r unit %d (%s) answers again", bus.name, unit, ", ".join(devices))
        if self._on_device is not None:
            self._on_device(DeviceChange(bus.name, unit, devices, lost, time.time(), reason))

    def _build_frame(self) -> Frame:
        plan = self.plan
        value = plan.decoder.decode(self._buffer)
        quality = self._q.copy()
        ts = self._ts.copy()
        failed = quality != 0
        value[failed] = np.nan  # never pass on a stale register for a failed block
        quality[~failed & ~np.isfinite(value)] = _BAD_VALUE
        if not self._clock_synced():
            quality |= _UNSYNCED
        return Frame(index=plan.point_index, ts=ts, value=value, quality=quality, bus=plan.bus.name)

    async def _try_connect(self) -> None:
        now = time.monotonic()
        if now < self._next_connect:
            return
        try:
            await self.source.connect()
        except SourceLinkError as exc:
            now = time.monotonic()
            self._next_connect = now + self._backoff.next_delay(now)
            if self._link_down_since is None:  # first failure: say it once
                self._link_down_since = now
                log.warning("bus %r: %s; retrying in the background", self.plan.bus.name, exc)
                self._link_changed(LinkChange(self.plan.bus.name, True, time.time(), str(exc)))
            else:
                log.debug("bus %r: reconnect failed: %s", self.plan.bus.name, exc)
            return
        now = time.monotonic()
        self._backoff.connected(now)
        self.health.probe_all_now(now)
        if self._ever_connected:
            self.stats.reconnects += 1
        if self._link_down_since is not None:
            outage = now - self._link_down_since
            log.info("bus %r: connected again after %.1f s", self.plan.bus.name, outage)
            self._link_changed(LinkChange(self.plan.bus.name, False, time.time(), "", outage))
        self._link_down_since = None
        self._ever_connected = True

    async def _link_lost(self, reason: str) -> None:
        await self.source.close()
        now = time.monotonic()
        self._next_connect = now + self._backoff.next_delay(now)
        if self._link_down_since is None:
            self._link_down_since = now
            log.warning("bus %r: %s; reconnecting", self.plan.bus.name, reason)
            self._link_changed(LinkChange(self.plan.bus.name, True, time.time(), reason))

    def _link_changed(self, change: LinkChange) -> None:
        if self._on_link is not None:
            self._on_link(change)

    def _op_failed(self, op: ReadOp, reason: str) -> None:
        n = self._failing[op.block] = self._failing.get(op.block, 0) + 1
        if n == 1:
            keys = tuple(self.plan.point_keys[int(i)] for i in op.pos)
            log.warning(
                "bus %r %s (%s) failing: %s",
                self.plan.bus.name,
                _label(op.block),
                _short(keys),
                reason,
            )

    def _op_recovered(self, op: ReadOp) -> None:
        log.info(
            "bus %r %s recovered after %d failed cycles",
            self.plan.bus.name,
            _label(op.block),
            self._failing.pop(op.block),
        )


def _honour_cancel() -> None:
    """Re-raise a cancel that a read swallowed.

    Python 3.11's asyncio.wait_for (inside pymodbus's request) returns the reply instead of
    raising CancelledError when the reply comes in the same loop turn as the cancel; the
    task then polls on with cancelling() > 0, and a shutdown waiting for it never ends
    (seen at 5,000 points, where a SIGTERM mostly lands during a read).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _label(blk: Block) -> str:
    return f"unit {blk.unit_id} {blk.table} {blk.address}-{blk.address + blk.count - 1}"


def _short(keys: tuple[str, ...], n: int = 4) -> str:
    more = f", +{len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
