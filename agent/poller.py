"""The bus task: reads a BusPlan's blocks every poll interval and emits one Frame per cycle."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from agent.backoff import Backoff
from agent.model import Frame, Quality
from agent.plan import BusPlan
from drivers.base import Source, SourceLinkError, SourceProtocolError, SourceTimeout

log = logging.getLogger(__name__)

_COMM_FAIL = np.uint8(Quality.COMM_FAIL)
_PROTOCOL = np.uint8(Quality.PROTOCOL)
_BAD_VALUE = np.uint8(Quality.BAD_VALUE)
_UNSYNCED = np.uint8(Quality.CLOCK_UNSYNCED)


@dataclass(slots=True)
class PollerStats:
    """Counters since start. `reconnects` counts successful re-opens after a link loss."""

    cycles: int = 0
    reads_ok: int = 0
    timeouts: int = 0
    protocol_errors: int = 0
    link_errors: int = 0
    overruns: int = 0
    reconnects: int = 0


class BusPoller:
    """Polls one bus. `run()` owns the source: it connects, reconnects, and closes it on exit.

    Every cycle emits exactly one Frame covering all the plan's points, whatever failed.
    """

    def __init__(
        self,
        plan: BusPlan,
        source: Source,
        emit: Callable[[Frame], Awaitable[None]],
        *,
        clock_synced: Callable[[], bool] = lambda: True,
        backoff: Backoff | None = None,
    ) -> None:
        if plan.bus.poll_interval <= 0:
            raise ValueError(f"bus {plan.bus.name!r}: poll_interval must be > 0")
        self.plan = plan
        self.source = source
        self.stats = PollerStats()
        self._emit = emit
        self._clock_synced = clock_synced
        self._backoff = backoff or Backoff(0.5, 30.0, 60.0, jitter="equal")
        n_blocks = len(plan.blocks)
        self._buffer = np.zeros(plan.buffer_size, dtype=np.uint16)
        self._block_ts = np.zeros(n_blocks, dtype=np.float64)
        self._block_q = np.zeros(n_blocks, dtype=np.uint8)
        self._failing: list[int] = [0] * n_blocks  # consecutive failed cycles per block
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
                slot += interval
                now = time.monotonic()
                if now > slot:  # overran: skip the missed slots, never run cycles back to back
                    self.stats.overruns += 1
                    slot += math.ceil((now - slot) / interval) * interval
                await asyncio.sleep(slot - now)
        finally:
            await self.source.close()

    async def poll_once(self) -> Frame:
        """One cycle: (re)connect if due, read every block, decode, emit the frame."""
        plan = self.plan
        if not self.source.connected:
            await self._try_connect()
        for b, block in enumerate(plan.blocks):
            if not self.source.connected:
                self._block_q[b:] = _COMM_FAIL
                self._block_ts[b:] = time.time()
                break
            t_try = time.time()
            try:
                raw = await self.source.read(block)
            except SourceTimeout as exc:
                self.stats.timeouts += 1
                self._block_failed(b, _COMM_FAIL, t_try, str(exc))
            except SourceProtocolError as exc:
                self.stats.protocol_errors += 1
                self._block_failed(b, _PROTOCOL, t_try, str(exc))
            except SourceLinkError as exc:
                self.stats.link_errors += 1
                self._block_q[b] = _COMM_FAIL
                self._block_ts[b] = t_try
                await self._link_lost(str(exc))
            else:
                off = plan.block_offsets[b]
                self._buffer[off : off + block.count] = raw.registers
                self._block_ts[b] = raw.t_wall
                self._block_q[b] = 0
                self.stats.reads_ok += 1
                if self._failing[b]:
                    self._block_recovered(b)
        frame = self._build_frame()
        self.stats.cycles += 1
        await self._emit(frame)
        return frame

    def _build_frame(self) -> Frame:
        plan = self.plan
        value = plan.decoder.decode(self._buffer)
        quality = self._block_q[plan.point_block]
        ts = self._block_ts[plan.point_block]
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
            else:
                log.debug("bus %r: reconnect failed: %s", self.plan.bus.name, exc)
            return
        now = time.monotonic()
        self._backoff.connected(now)
        if self._ever_connected:
            self.stats.reconnects += 1
        if self._link_down_since is not None:
            log.info(
                "bus %r: connected again after %.1f s",
                self.plan.bus.name,
                now - self._link_down_since,
            )
        self._link_down_since = None
        self._ever_connected = True

    async def _link_lost(self, reason: str) -> None:
        await self.source.close()
        now = time.monotonic()
        self._next_connect = now + self._backoff.next_delay(now)
        if self._link_down_since is None:
            self._link_down_since = now
            log.warning("bus %r: %s; reconnecting", self.plan.bus.name, reason)

    def _block_failed(self, b: int, q: np.uint8, t_try: float, reason: str) -> None:
        self._block_q[b] = q
        self._block_ts[b] = t_try
        self._failing[b] += 1
        if self._failing[b] == 1:
            log.warning(
                "bus %r %s (%s) failing: %s",
                self.plan.bus.name,
                self.plan.block_label(b),
                _short(self.plan.block_points(b)),
                reason,
            )

    def _block_recovered(self, b: int) -> None:
        log.info(
            "bus %r %s recovered after %d failed cycles",
            self.plan.bus.name,
            self.plan.block_label(b),
            self._failing[b],
        )
        self._failing[b] = 0


def _short(keys: tuple[str, ...], n: int = 4) -> str:
    more = f", +{len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
