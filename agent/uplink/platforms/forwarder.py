"""Drains one outbox consumer into one platform: alarms first, in order per stream, retried.

One request at a time (the platforms want order): lease a batch (alarms, then gateway
events, then telemetry, oldest first), translate it into requests (agent.uplink.platforms.records),
send each; ack the batch when all were accepted. On any failure the batch is kept (the
outbox hands out the same rows again, so order per stream is kept) and the request is tried
again after a backoff. A partially sent batch is sent again whole: a platform may see a
request twice after a failure (at-least-once, as for MQTT). Records keep their original
timestamps whenever they are sent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from agent.core.backoff import Backoff
from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Batch, OutboxConsumer
from agent.uplink.contract import Uplink, UplinkError
from agent.uplink.forwarder import ForwarderStats, honour_cancel
from agent.uplink.platforms.records import Translator

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0


class PlatformForwarder:
    """Sends one outbox consumer's rows to one platform until cancelled."""

    def __init__(
        self,
        consumer: OutboxConsumer,
        uplink: Uplink,
        spec: PlatformSpec,
        *,
        stable_after: float = 30.0,
    ) -> None:
        self.consumer, self.uplink, self.spec = consumer, uplink, spec
        self.translator = Translator(spec)
        self.backoff = Backoff(spec.backoff_base, spec.backoff_cap, stable_after)
        self.stats = ForwarderStats()
        self.requests = 0  # requests accepted by the platform
        self.items = 0  # items in those requests
        self._down_since: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self) -> None:
        try:
            await self.uplink.connect()
            self.stats.connects += 1
            while True:
                honour_cancel()
                self.stats.last_progress = time.monotonic()
                batch = await self.consumer.begin(self.spec.max_items)
                if batch is None:
                    await self.consumer.wait_for_data(IDLE_WAIT)
                    continue
                try:
                    ok = await self._send(batch)
                except BaseException:
                    self.consumer.keep(batch)
                    raise
                if not ok:
                    self.consumer.keep(batch)
                    await asyncio.sleep(self.backoff.next_delay())
                    self.stats.reconnects += 1
        finally:
            self.stats.connected = False
            await self.uplink.close(clean=True)

    async def _send(self, batch: Batch) -> bool:
        """Send the batch's requests; ack it if all were accepted. False after a failure."""
        requests, state = self.translator.requests(batch)
        for req in requests:
            self.stats.published += 1
            self.stats.published_records += req.items
            try:
                await self.uplink.publish(req.endpoint, req.body)
            except UplinkError as exc:
                self._failed(exc)
                return False
            finally:
                self.stats.last_progress = time.monotonic()  # a long batch is not a stall
            self.requests += 1
            self.items += req.items
        await self.consumer.ack(batch)
        self.translator.commit(state)
        if requests:
            self._ok()
        self.stats.messages += len(requests)
        self.stats.records += batch.records
        self.stats.acked_rows += len(batch.rows)
        return True

    def _ok(self) -> None:
        if not self.stats.connected:  # the backoff starts over once this lasts stable_after
            self.backoff.connected()
        self.stats.connected = True
        if self._down_since is not None:
            log.info(
                "platform %s (%s) accepts data again after %.0f s; sending the backlog",
                self.name,
                self.uplink.target,
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def _failed(self, exc: UplinkError) -> None:
        self.stats.connected = False
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s; data is kept in the outbox and retried", exc)
        else:
            log.debug("platform %s still failing: %s", self.name, exc)

    def snapshot(self, pending: dict[str, int]) -> dict[str, object]:
        """This uplink's part of the health snapshot."""
        s = self.stats
        return {
            "profile": self.spec.profile,
            "target": self.uplink.target,
            "connected": s.connected,
            "requests": self.requests,
            "items": self.items,
            "acknowledged_records": s.records,
            "pending": pending,
            "pending_records": sum(pending.values()),
            "failures": s.failures,
            "retries": s.reconnects,
            "last_error": s.last_error or None,
        }


def make_platform_forwarder(consumer: OutboxConsumer, spec: PlatformSpec) -> PlatformForwarder:
    """The forwarder for one [[platforms]] entry, with its profile's envelope."""
    from agent.uplink.platforms import hebei, mem
    from agent.uplink.platforms.http import HttpUplink

    seal = hebei.seal if spec.profile == "hebei_v1_1" else mem.seal
    return PlatformForwarder(consumer, HttpUplink(spec, seal), spec)
