"""Drains the outbox into an uplink: alarms first, live before backlog, batched, pipelined.

The uplink contract is in agent.uplink.contract (implemented by agent.uplink.mqtt.MqttUplink).

- Order: the outbox hands out alarms, then events, then live telemetry (stored after the
  current connection came up), then backlog telemetry. Backlog goes out at most at
  `spec.backlog_rate` records/s (a token bucket; 0 = unlimited), so after an outage the
  live stream stays current while the backlog drains beside it. Messages built from rows
  stored before the connection carry backfill=true.
- Pipelining: up to `spec.max_inflight` messages await their acknowledgement at once; the
  rows of a message are deleted only after its own acknowledgement.
- Delivery is at-least-once: when the link fails, every unacknowledged batch is kept and
  sent again (same seq numbers). Duplicates are bounded by the in-flight window:
  max_inflight * max_records_per_message records per failure or crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.backoff import Backoff
from agent.core.model import SiteSpec, UplinkSpec
from agent.store.outbox import Batch, Outbox
from agent.uplink.contract import Uplink, UplinkError
from agent.uplink.payload import build_message

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0  # seconds between outbox re-checks when nothing is pending
# In the first session after start-up, records produced this little before the connection came
# up (the first poll cycles racing the first connect) are live, not backfill. After an outage
# everything produced before the reconnect is backfill.
LIVE_GRACE = 5.0


def honour_cancel() -> None:
    """Re-raise a cancel that was swallowed.

    Python 3.11's asyncio.wait_for (used inside aiomqtt) returns the result instead of raising
    CancelledError when the awaited operation completes in the same loop turn as the cancel;
    the task then keeps running with cancelling() > 0. Loops call this once per turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(slots=True)
class ForwarderStats:
    messages: int = 0  # messages acknowledged by the upstream
    records: int = 0  # records in those messages
    acked_rows: int = 0  # outbox rows deleted after an ack
    published: int = 0  # messages handed to the uplink (acknowledged or not)
    published_records: int = 0
    backfill_records: int = 0  # acknowledged records sent as backfill
    connects: int = 0  # successful connections
    reconnects: int = 0  # connection attempts after a failure
    failures: int = 0  # failed connects and publishes
    last_error: str = ""
    connected: bool = False
    last_progress: float = 0.0  # monotonic: the loop's last turn (read by the systemd watchdog)


class TokenBucket:
    """`rate` tokens per second, up to `burst`; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.tokens = self.burst
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def ready(self) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        return self.tokens > 0

    def take(self, n: int) -> None:
        if self.rate > 0:
            self._refill()
            self.tokens -= n  # may go negative: one batch may exceed the remaining budget

    def wait_time(self) -> float:
        return 0.0 if self.rate <= 0 or self.tokens > 0 else -self.tokens / self.rate


class Forwarder:
    """One consumer of an outbox, sending to one uplink until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        uplink: Uplink,
        site: SiteSpec,
        spec: UplinkSpec,
        *,
        topic: Callable[[str], str] | None = None,
        clock_synced: Callable[[], bool] = lambda: True,
        stable_after: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.uplink = uplink
        self.site = site
        self.spec = spec
        self._topic = topic or self._default_topic
        self._clock_synced = clock_synced
        self.backoff = Backoff(spec.backoff_base, spec.backoff_cap, stable_after)
        self.backlog = TokenBucket(spec.backlog_rate, max(spec.backlog_rate, 1.0))
        self.stats = ForwarderStats()
        self._down_since: float | None = None  # monotonic time of the first failure in a row
        # a failed publish_side: an idle drain loop (nothing stored, e.g. the disk is full)
        # would not notice the dead link otherwise, so the health messages would stop for good
        self._side_error: UplinkError | None = None

    def _default_topic(self, stream: str) -> str:
        site = self.site
        return f"{self.spec.topic_prefix}/{site.enterprise_code}/{site.gateway_id}/{stream}"

    async def publish_side(self, topic: str, payload: bytes) -> bool:
        """Publish a message that is not stored (e.g. health) if connected; False if not sent."""
        if not self.stats.connected:
            return False
        try:
            await self.uplink.publish(topic, payload)
        except UplinkError as exc:
            self._side_error = exc  # the drain loop reconnects on its next turn
            return False
        return True

    async def run(self) -> None:
        """Connect, drain, reconnect with backoff; on cancel, say goodbye if connected."""
        try:
            while True:
                honour_cancel()
                self.stats.last_progress = time.monotonic()
                if await self._connect():
                    try:
                        first = self.stats.connects == 1
                        await self.outbox.set_live_boundary(
                            time.time() - LIVE_GRACE if first else None
                        )
                        await self._drain()
                    except UplinkError as exc:
                        self._failed(exc)
                        self.stats.connected = False
                        await self.uplink.close(clean=False)
                await asyncio.sleep(self.backoff.next_delay())
                self.stats.reconnects += 1
        except asyncio.CancelledError:
            if self.stats.connected:
                self.stats.connected = False
                await self.uplink.close(clean=True)
            raise

    async def _connect(self) -> bool:
        try:
            await self.uplink.connect()
        except UplinkError as exc:
            self._failed(exc)
            await self.uplink.close(clean=False)
            return False
        self.backoff.connected()
        self._side_error = None
        self.stats.connects += 1
        self.stats.connected = True
        if self._down_since is not None:
            log.info(
                "uplink %s is back after %.0f s; sending the backlog",
                self.uplink.target,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        elif self.stats.connects == 1:
            log.info("uplink %s connected", self.uplink.target)
        return True

    def _failed(self, exc: UplinkError) -> None:
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("uplink down: %s; data is kept in the outbox and retried", exc)
        else:
            log.debug("uplink still down: %s", exc)

    async def _drain(self) -> None:
        """Send until the link fails (UplinkError); unacknowledged batches are kept."""
        inflight: dict[asyncio.Task[None], Batch] = {}
        spec = self.spec
        try:
            while True:
                honour_cancel()
                self.stats.last_progress = time.monotonic()
                if self._side_error is not None:
                    raise self._side_error
                await self._reap(inflight, block=len(inflight) >= spec.max_inflight)
                batch = await self.outbox.begin(
                    spec.max_records_per_message,
                    spec.max_bytes_per_message,
                    backlog=self.backlog.ready(),
                )
                if batch is None:
                    await self._idle(inflight)
                    continue
                if batch.backfill and batch.stream == "telemetry":
                    self.backlog.take(batch.records)
                try:
                    message = build_message(
                        self.site,
                        batch,
                        backfill=batch.backfill,
                        clock_synced=self._clock_synced(),
                    )
                except BaseException:
                    self.outbox.keep(batch)
                    raise
                task = asyncio.create_task(
                    self.uplink.publish(self._topic(batch.stream), message),
                    name=f"publish:{batch.stream}",
                )
                inflight[task] = batch
                self.stats.published += 1
                self.stats.published_records += batch.records
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            for batch in inflight.values():
                self.outbox.keep(batch)

    async def _reap(self, inflight: dict[asyncio.Task[None], Batch], *, block: bool) -> None:
        """Ack the batches whose publish completed; raise the first publish failure."""
        if block and inflight:
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        done = [t for t in inflight if t.done()]
        if not done:
            return
        ok = [t for t in done if not t.cancelled() and t.exception() is None]
        batches = [inflight.pop(t) for t in ok]
        if batches:
            await self.outbox.ack(*batches)
            for b in batches:
                self.stats.messages += 1
                self.stats.records += b.records
                self.stats.acked_rows += len(b.rows)
                if b.backfill:
                    self.stats.backfill_records += b.records
        for t in done:
            if t in inflight:  # failed: the finally of _drain keeps its batch
                exc = t.exception() if not t.cancelled() else None
                if isinstance(exc, UplinkError):
                    raise exc
                if exc is not None:
                    raise exc
                raise UplinkError("a publish was cancelled")

    async def _idle(self, inflight: dict[asyncio.Task[None], Batch]) -> None:
        """Nothing to send now: wait for a put, an acknowledgement, or backlog tokens."""
        timeout = IDLE_WAIT
        if not self.backlog.ready():
            timeout = min(timeout, max(self.backlog.wait_time(), 0.001))
        if not inflight:
            await self.outbox.wait_for_data(timeout)
            return
        waiter = asyncio.ensure_future(self.outbox.wait_for_data(timeout))
        try:
            await asyncio.wait([*inflight, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
