"""Drains the outbox into an uplink: alarms first, batched, rows deleted only after the ack.

The uplink contract is in agent.uplink (implemented by agent.mqtt.MqttUplink).

Delivery is at-least-once: a batch whose ack was lost is sent again (same seq numbers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.backoff import Backoff
from agent.model import SiteSpec, UplinkSpec
from agent.outbox import Batch, Outbox
from agent.payload import build_message
from agent.uplink import Uplink, UplinkError

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
    connects: int = 0  # successful connections
    reconnects: int = 0  # connection attempts after a failure
    failures: int = 0  # failed connects and publishes
    last_error: str = ""
    connected: bool = False


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
        self.stats = ForwarderStats()
        self._down_since: float | None = None  # monotonic time of the first failure in a row

    def _default_topic(self, stream: str) -> str:
        site = self.site
        return f"{self.spec.topic_prefix}/{site.enterprise_code}/{site.gateway_id}/{stream}"

    async def run(self) -> None:
        """Connect, drain, reconnect with backoff; on cancel, say goodbye if connected."""
        try:
            while True:
                honour_cancel()
                if await self._connect():
                    try:
                        grace = LIVE_GRACE if self.stats.connects == 1 else 0.0
                        await self._drain(live_since=time.time() - grace)
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

    async def _drain(self, live_since: float) -> None:
        """Send until the link fails; rows produced before `live_since` go as backfill."""
        while True:
            honour_cancel()
            batch = await self.outbox.begin(self.spec.max_records_per_message)
            if batch is None:
                await self.outbox.wait_for_data(IDLE_WAIT)
                continue
            await self._send(batch, live_since)

    async def _send(self, batch: Batch, live_since: float) -> None:
        try:
            message = build_message(
                self.site,
                batch,
                backfill=batch.oldest_ts < live_since,
                clock_synced=self._clock_synced(),
            )
            await self.uplink.publish(self._topic(batch.stream), message)
        except BaseException:
            self.outbox.keep(batch)
            raise
        await self.outbox.ack(batch)
        self.stats.messages += 1
        self.stats.records += batch.records
        self.stats.acked_rows += len(batch.rows)
