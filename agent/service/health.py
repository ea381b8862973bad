"""Delivery health: counters published on `{prefix}/{enterprise}/{gateway}/health` and shown
in status.json (section "health", field list in docs/operations.md#health).

`Health.snapshot()` gathers the counters (cheap: the outbox keeps its pending counts in
memory). `Health.run()` publishes one QoS 1 health message every `uplink.health_interval`
seconds while connected (not stored: a missed one is simply skipped) and refreshes the
"health" section of the shared status file every STATUS_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import orjson

from agent.core.model import AgentConfig
from agent.service.delivery import DeliveryWatch
from agent.store.guard import StoreGuard
from agent.store.journal import Journal
from agent.store.outbox import Outbox, OutboxStats
from agent.uplink.forwarder import Forwarder
from agent.uplink.payload import WIRE_VERSION

log = logging.getLogger(__name__)

STATUS_EVERY: Final = 5.0


class StatusSink(Protocol):
    """The shared status.json writer (agent.service.status_file.StatusFile) or anything alike."""

    def update(self, section: str, data: Any) -> None: ...


class Health:
    def __init__(
        self,
        cfg: AgentConfig,
        outbox: Outbox,
        forwarder: Forwarder,
        guard: StoreGuard | None = None,
        status: StatusSink | None = None,
    ) -> None:
        self.cfg, self.outbox, self.forwarder = cfg, outbox, forwarder
        self.guard, self.status = guard, status
        self.sent = 0  # health messages published
        self.platforms: Sequence[Forwarder] = ()  # [[platforms]] uplinks
        # set by the supervisor from agent.service.ops.Ops: the MQTT delivery stall check and
        # the systemd watchdog state (None without a watchdog)
        self.delivery: DeliveryWatch | None = None
        self.watchdog: Callable[[], dict[str, Any] | None] = lambda: None
        self.journal: Journal | None = None  # its chain head goes upstream (an anchor)

    async def snapshot(self) -> dict[str, Any]:
        stats = await self.outbox.stats()
        fw = self.forwarder.stats
        now = time.time()
        oldest = min(stats.oldest_ts.values(), default=None)
        guard = self.guard
        return {
            "connected": fw.connected,
            "published": fw.published,
            "published_records": fw.published_records,
            "acknowledged": fw.messages,
            "acknowledged_records": fw.records,
            "backfill_records": fw.backfill_records,
            "pending_records": sum(stats.pending_records.values()),
            "pending": stats.pending_records,
            "dropped_records": stats.dropped_records + (guard.dropped_records if guard else 0),
            "oldest_unsent_age_s": None if oldest is None else round(max(0.0, now - oldest), 1),
            "reconnects": fw.reconnects,
            "failures": fw.failures,
            "last_error": fw.last_error or None,
            "db_bytes": stats.db_bytes,
            "used_bytes": stats.used_bytes,
            "max_bytes": self.outbox.max_bytes,
            "outbox_replaced": stats.replaced,
            "storage_error": guard.error if guard else None,
            "storage_failures": guard.failures if guard else 0,
            "held_in_memory": len(guard.held) if guard else 0,
            "uplinks": self._uplinks(stats, now),
            "oversize_records": int(getattr(self.forwarder.codec, "oversize_records", 0)),
            "delivery_stalled": self.delivery.stalled if self.delivery else None,
            "watchdog": self.watchdog(),
            "journal": None if self.journal is None else self.journal.head.to_json(),
        }

    def _uplinks(self, stats: OutboxStats, now: float) -> dict[str, Any]:
        """Each uplink on its own (MQTT first, then every platform), with its own pending and
        the oldest record it has not acknowledged."""
        mine = stats.pending_by_consumer
        oldest = stats.oldest_by_consumer
        return {
            f.name: f.snapshot(
                mine.get(f.name, stats.pending_records),
                min(oldest.get(f.name, stats.oldest_ts).values(), default=None),
                now,
            )
            for f in (self.forwarder, *self.platforms)
        }

    def message(self, snap: dict[str, Any], now: float | None = None) -> bytes:
        site = self.cfg.site
        return orjson.dumps(
            {
                "v": WIRE_VERSION,
                "enterprise": site.enterprise_code,
                "gateway": site.gateway_id,
                "ts": round((time.time() if now is None else now) * 1000),
                **snap,
            }
        )

    async def run(self) -> None:
        interval = self.cfg.uplink.health_interval
        next_pub = time.monotonic() + min(interval, 10.0)  # a first one soon after start
        while True:
            snap = await self.snapshot()
            if self.status is not None:
                self.status.update("health", snap)
            if interval > 0 and time.monotonic() >= next_pub:
                if await self.forwarder.publish_side(self.cfg.topic("health"), self.message(snap)):
                    self.sent += 1
                    next_pub = time.monotonic() + interval
                else:
                    next_pub = time.monotonic() + min(interval, STATUS_EVERY)
            await asyncio.sleep(min(STATUS_EVERY, interval) if interval > 0 else STATUS_EVERY)
