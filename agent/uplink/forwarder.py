"""The one forwarding loop: drains one outbox consumer into one uplink, for MQTT and platforms.

An uplink is a transport, a codec and a policy (agent.uplink.contract states what each
must do and what the loop guarantees). The loop:

- Order: the outbox hands out alarms, then events, then telemetry. Unless the policy is
  `ordered`, telemetry stored after the current connection came up (live) goes before
  older telemetry (backlog), and backlog goes out at most at `backlog_rate` records/s (a
  token bucket; 0 = unlimited), so after an outage the live stream stays current while the
  backlog drains beside it. Messages built from rows stored before the connection carry
  backfill=true.
- Pipelining: up to `max_inflight` messages await their acknowledgement at once; a batch's
  rows are acked in the outbox only after every message of it was acknowledged.
- Failure: any UplinkError drops the link; every unacknowledged batch is kept and sent
  again (same seq numbers) after a reconnect with backoff (agent.core.backoff, reset after
  a stable session), or, with a `Policy.reconnect` and an uplink that can probe (MQTT),
  after probes found the upstream back and a random spread passed (agent.uplink.reconnect).
  Duplicates are bounded by the in-flight window: max_inflight messages per failure or crash.
- Logs: one warning when an outage starts, naming the cause a connect attempt got ("connection
  refused", "not authorised"; a lost link alone only says the socket went away), and one line
  when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.core.backoff import Backoff, Reconnect
from agent.core.model import SiteSpec, UplinkSpec
from agent.store.outbox import Batch, Outbox, OutboxConsumer, OutboxError
from agent.uplink.contract import (
    Codec,
    Message,
    Policy,
    Probing,
    Uplink,
    UplinkError,
    UplinkRefused,
)
from agent.uplink.flow import ForwarderStats, TokenBucket, honour_cancel
from agent.uplink.payload import MqttCodec
from agent.uplink.reconnect import OutageLog, wait_until_reachable

log = logging.getLogger(__name__)

STOP_GRACE = 3.0  # seconds sent messages get for their acknowledgement when the agent stops
IDLE_WAIT = 1.0  # seconds between outbox re-checks when nothing is pending
# In the first session after start-up, records produced this little before the connection came
# up (the first poll cycles racing the first connect) are live, not backfill. After an outage
# everything produced before the reconnect is backfill.
LIVE_GRACE = 5.0


@dataclass(slots=True)
class _Slot:
    """A leased batch and how many of its messages still await their acknowledgement."""

    batch: Batch
    left: int
    done: bool = field(default=False)


class Forwarder:
    """One outbox consumer, sent through one uplink until cancelled (see the module docstring)."""

    def __init__(
        self,
        source: Outbox | OutboxConsumer,
        uplink: Uplink,
        codec: Codec,
        policy: Policy,
        *,
        labels: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(source, Outbox):
            source = source.consumer(source.consumers[0])
        self.consumer = source
        self.uplink, self.codec, self.policy = uplink, codec, policy
        self.labels = labels or {}  # extra fields of this uplink's health entry
        self.backoff = Backoff(policy.backoff_base, policy.backoff_cap, policy.stable_after)
        self.reconnect = (
            Reconnect(policy.reconnect)
            if policy.reconnect is not None and isinstance(uplink, Probing)
            else None
        )
        self._refused = False  # the last connect was refused (long wait before the next)
        self.outage = OutageLog(self.consumer.name, uplink.target, log)
        self.backlog = TokenBucket(policy.backlog_rate, max(policy.backlog_rate, 1.0))
        self.stats = ForwarderStats()
        self._open = False  # connect() succeeded and no failure since
        # a failed publish_side: an idle drain loop (nothing stored, e.g. the disk is full)
        # would not notice the dead link otherwise, so the health messages would stop for good
        self._side_error: UplinkError | None = None

    @property
    def name(self) -> str:
        """The consumer name: this uplink's name in the outbox, health and status."""
        return self.consumer.name

    async def publish_side(self, topic: str, payload: bytes) -> bool:
        """Send a message that is not stored (e.g. health) if connected; False if not sent."""
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
                        if not self.policy.ordered:
                            first = self.stats.connects == 1
                            live = time.time() - LIVE_GRACE if first else None
                            await self.consumer.set_live_boundary(live)
                        await self._drain()
                    except UplinkError as exc:
                        self._failed(exc, lost=self.reconnect is not None)
                        await self.uplink.close(clean=False)
                await self._pause()
                self.stats.reconnects += 1
        except asyncio.CancelledError:
            self.stats.connected = False
            if self._open:
                self._open = False
                await self.uplink.close(clean=True)
            raise

    async def _pause(self) -> None:
        """The wait before the next connect: probes then a spread (MQTT), or the plain backoff,
        cut short by `alarm_probe` while alarms are pending."""
        state, uplink = self.reconnect, self.uplink
        if state is None or not isinstance(uplink, Probing):
            await self._backoff(self.backoff.next_delay())
            return
        state.lost()
        await wait_until_reachable(
            uplink, state, refused=self._refused, failed=self._failed, tick=self._tick
        )

    def _tick(self) -> None:
        self.stats.last_progress = time.monotonic()

    async def _backoff(self, delay: float) -> None:
        """The backoff before the next attempt, cut to `alarm_probe` s while alarms are pending
        (a new alarm is tried soon after the upstream is back, not after the whole backoff;
        at most one attempt per `alarm_probe` s, so a dead upstream is not hammered)."""
        probe = self.policy.alarm_probe
        if probe <= 0 or delay <= probe:
            await asyncio.sleep(delay)
            return
        end = time.monotonic() + delay
        await asyncio.sleep(probe)
        while (left := end - time.monotonic()) > 0:
            try:
                if (await self.consumer.pending()).get("alarm", 0) > 0:
                    return
            except OutboxError:  # the store cannot say: the backoff as it is
                pass
            await asyncio.sleep(min(left, probe, IDLE_WAIT))

    async def _connect(self) -> bool:
        try:
            await self.uplink.connect()
        except UplinkError as exc:
            self._refused = isinstance(exc, UplinkRefused)
            self._failed(exc)
            await self.uplink.close(clean=False)
            return False
        self._refused = False
        self._open = True
        self._side_error = None
        self.stats.connects += 1
        if self.policy.connect_confirms:
            self._up()
        return True

    def _up(self) -> None:
        """The link is proven (connected, or a first acknowledgement)."""
        self.backoff.connected()
        if self.reconnect is not None:
            self.reconnect.connected()
        self.stats.connected = True
        self.outage.up(first=self.stats.connects == 1)

    def _failed(self, exc: UplinkError, *, lost: bool = False) -> None:
        """A connect, probe or send failed (lost: a working link broke; see OutageLog)."""
        self._open = False
        self.stats.connected = False
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        self.outage.failed(exc, lost=lost)

    async def _drain(self) -> None:
        """Send until the link fails (UplinkError); unacknowledged batches are kept."""
        inflight: dict[asyncio.Task[None], _Slot] = {}
        queue: deque[tuple[_Slot, Message]] = deque()  # encoded, not yet sent
        leased: list[_Slot] = []
        window = max(1, self.policy.max_inflight)
        try:
            while True:
                honour_cancel()
                self.stats.last_progress = time.monotonic()
                if self._side_error is not None:
                    raise self._side_error
                await self._reap(inflight, block=len(inflight) >= window)
                leased = [s for s in leased if not s.done]
                if len(inflight) >= window:
                    continue
                if queue:
                    slot, msg = queue.popleft()
                    self._send(inflight, slot, msg)
                    continue
                slot_or_none = await self._next(inflight)
                if slot_or_none is not None:
                    slot, msgs = slot_or_none
                    leased.append(slot)
                    queue.extend((slot, m) for m in msgs)
        finally:
            task = asyncio.current_task()
            if inflight and task is not None and task.cancelling():
                await self._finish(inflight)
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            for slot in leased:
                if not slot.done:
                    self.consumer.keep(slot.batch)

    async def _finish(self, inflight: dict[asyncio.Task[None], _Slot]) -> None:
        """On stop: messages already sent get STOP_GRACE s for their acknowledgement, and the
        batches that were fully acknowledged are acked in the outbox, so what the far end
        accepted is not sent again after a restart (a platform cannot drop duplicates)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(list(inflight), timeout=STOP_GRACE)
        complete: list[_Slot] = []
        for t in [t for t in inflight if t.done() and not t.cancelled()]:
            if t.exception() is None:
                slot = inflight.pop(t)
                slot.left -= 1
                if slot.left == 0:
                    complete.append(slot)
        if complete:
            with contextlib.suppress(asyncio.CancelledError):
                await self._acked(complete)

    async def _next(
        self, inflight: dict[asyncio.Task[None], _Slot]
    ) -> tuple[_Slot, list[Message]] | None:
        """Lease and encode the next batch; None when there was nothing (after a wait)."""
        p = self.policy
        batch = await self.consumer.begin(p.max_records, p.max_bytes, backlog=self.backlog.ready())
        if batch is None:
            await self._idle(inflight)
            return None
        if batch.backfill and batch.stream == "telemetry":
            self.backlog.take(batch.records)
        try:
            msgs = list(self.codec.encode(batch))
        except BaseException:
            self.consumer.keep(batch)
            raise
        slot = _Slot(batch, len(msgs))
        if not msgs:  # nothing this uplink sends for it
            await self._acked([slot])
        return slot, msgs

    def _send(self, inflight: dict[asyncio.Task[None], _Slot], slot: _Slot, msg: Message) -> None:
        task = asyncio.create_task(
            self.uplink.publish(msg.topic, msg.payload), name=f"send:{self.name}:{msg.topic}"
        )
        task.add_done_callback(functools.partial(self._count, msg))
        inflight[task] = slot
        self.stats.published += 1
        self.stats.published_records += msg.items

    def _count(self, msg: Message, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.stats.messages += 1
            self.stats.items += msg.items

    async def _reap(self, inflight: dict[asyncio.Task[None], _Slot], *, block: bool) -> None:
        """Ack the batches whose messages all completed; raise the first send failure."""
        if block and inflight:
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        done = [t for t in inflight if t.done()]
        if not done:
            return
        complete: list[_Slot] = []
        for t in done:
            if t.cancelled() or t.exception() is not None:
                continue
            slot = inflight.pop(t)
            slot.left -= 1
            if slot.left == 0:
                complete.append(slot)
        if complete:
            await self._acked(complete)
        for t in done:
            if t in inflight:  # failed: the finally of _drain keeps its batch
                exc = t.exception() if not t.cancelled() else None
                if exc is not None:
                    raise exc
                raise UplinkError(f"a send to {self.name} was cancelled")

    async def _acked(self, slots: list[_Slot]) -> None:
        for s in slots:  # before the outbox ack: a crash in between resends, never forgets
            self.codec.acked(s.batch)
        await self.consumer.ack(*(s.batch for s in slots))
        if not self.stats.connected:
            self._up()
        for s in slots:
            s.done = True
            b = s.batch
            self.stats.records += b.records
            self.stats.acked_rows += len(b.rows)
            if b.backfill:
                self.stats.backfill_records += b.records

    async def _idle(self, inflight: dict[asyncio.Task[None], _Slot]) -> None:
        """Nothing to send now: wait for a put, an acknowledgement, or backlog tokens."""
        timeout = IDLE_WAIT
        if not self.backlog.ready():
            timeout = min(timeout, max(self.backlog.wait_time(), 0.001))
        if not inflight:
            await self.consumer.wait_for_data(timeout)
            return
        waiter = asyncio.ensure_future(self.consumer.wait_for_data(timeout))
        try:
            await asyncio.wait([*inflight, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

    def snapshot(
        self, pending: dict[str, int], oldest: float | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """This uplink's entry in the health snapshot's "uplinks". `oldest`: wall-clock time
        of the oldest record this uplink has not acknowledged (None: nothing pending)."""
        s = self.stats
        t = time.time() if now is None else now
        return {
            **self.labels,
            "target": self.uplink.target,
            "connected": s.connected,
            "requests": s.messages,
            "items": s.items,
            "acknowledged_records": s.records,
            "pending": pending,
            "pending_records": sum(pending.values()),
            "oldest_unsent": None if oldest is None else round(oldest * 1000),
            "oldest_unsent_age_s": None if oldest is None else round(max(0.0, t - oldest), 1),
            "failures": s.failures,
            "retries": s.reconnects,
            "last_error": s.last_error or None,
        }


def mqtt_policy(spec: UplinkSpec, stable_after: float = 30.0) -> Policy:
    """The MQTT uplink's loop parameters: a window of in-flight PUBACKs, live before backlog."""
    return Policy(
        max_records=spec.max_records_per_message,
        max_bytes=spec.max_bytes_per_message,
        max_inflight=spec.max_inflight,
        ordered=False,
        backlog_rate=spec.backlog_rate,
        backoff_base=spec.backoff_base,
        backoff_cap=spec.backoff_cap,
        stable_after=stable_after,
        reconnect=spec.reconnect,
    )


def mqtt_forwarder(
    source: Outbox | OutboxConsumer,
    uplink: Uplink,
    site: SiteSpec,
    spec: UplinkSpec,
    *,
    topic: Callable[[str], str] | None = None,
    clock_synced: Callable[[], bool] = lambda: True,
    stable_after: float = 30.0,
) -> Forwarder:
    """The forwarder of the MQTT uplink: one versioned JSON message per batch."""

    def default_topic(stream: str) -> str:
        return f"{spec.topic_prefix}/{site.enterprise_code}/{site.gateway_id}/{stream}"

    codec = MqttCodec(site, topic or default_topic, clock_synced, spec.max_bytes_per_message)
    return Forwarder(source, uplink, codec, mqtt_policy(spec, stable_after))
