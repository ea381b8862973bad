"""Operations around a running Agent: clock watch, status snapshot, systemd readiness and watchdog.

`Ops(agent)` is created by the Agent; `start(tg)` adds its background tasks to the agent's
TaskGroup after the pollers, forwarder and rules stage are running, then reports READY=1.
The supervisor calls `observe(frame)` after each frame is stored in the outbox: that marks
polling and outbox progress for the watchdog and feeds the device status.

status.json carries the watchdog state only where a systemd watchdog exists (WATCHDOG_USEC),
refreshed from the loops' marks at each write, and the MQTT uplink's delivery stall
(agent.service.delivery) everywhere: a stall only when records wait and none is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from typing import Any, Protocol

from agent import __version__
from agent.core.model import AgentConfig, Frame
from agent.rules import RuleEngine
from agent.service.alarm_status import comm_loss_status, rule_alarm_status
from agent.service.clock import ClockJump, ClockMonitor
from agent.service.comm import CommAlarms
from agent.service.delivery import DeliveryWatch, stall_limit
from agent.service.runtime_status import DeviceTracker
from agent.service.status_file import StatusFile
from agent.service.systemd import Progress, Watchdog, sd_notify, watchdog_interval
from agent.source.plan import BusPlan
from agent.source.poller import BusPoller
from agent.store.guard import StoreGuard
from agent.store.outbox import Outbox
from agent.uplink.forwarder import Forwarder
from agent.uplink.payload import encode_event

log = logging.getLogger(__name__)

# Wall-vs-monotonic comparisons: at every stored frame (at most every CLOCK_CHECK s; frames are
# what carries wall-clock time, and comparing there needs no timer of its own), and every
# CLOCK_IDLE s from the clock task when no frame comes.
CLOCK_CHECK = 1.0
CLOCK_IDLE = 10.0
SYNC_PROBE = 30.0  # seconds between NTP-sync probes
STATUS_EVERY = 5.0  # seconds between status.json snapshots
UPLINK_MARK = "uplink"


def bus_mark(name: str) -> str:
    return f"bus {name!r}"


def platform_mark(name: str) -> str:
    return f"platform uplink {name!r}"


class OpsHost(Protocol):
    """What Ops needs of the running agent (agent.service.supervisor.Agent provides it)."""

    cfg: AgentConfig
    plans: tuple[BusPlan, ...]
    engine: RuleEngine
    pollers: list[BusPoller]
    outbox: Outbox
    store: StoreGuard
    forwarder: Forwarder  # the MQTT uplink
    platforms: list[Forwarder]  # the [[platforms]] uplinks
    comm: CommAlarms  # the active comm_loss alarms (they bypass the engine)


class Ops:
    def __init__(self, agent: OpsHost, clock: ClockMonitor | None = None) -> None:
        self.agent = agent
        self.clock = clock or ClockMonitor()
        self.progress = Progress()
        self.tracker = DeviceTracker(agent.cfg)
        self.status = StatusFile(agent.cfg.storage.dir)
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._clock_due = asyncio.Event()  # observe() found a jump: the clock task reports it
        self._jump: ClockJump | None = None
        self.reloads: list[dict[str, Any]] = []  # the last few reload outcomes (bounded)
        self._status_failed = False
        self.tasks: list[asyncio.Task[None]] = []
        self.watchdog: Watchdog | None = None  # only under a systemd WatchdogSec
        self.delivery = DeliveryWatch(stall_limit(agent.cfg.uplink))
        self.expect_progress()

    # -- progress and watchdog ------------------------------------------------------------

    def expect_progress(self) -> None:
        """(Re)declare which marks the watchdog needs and how fresh, from the current config."""
        cfg = self.agent.cfg
        for name in list(self.progress.limits):
            self.progress.forget(name)
        for plan in self.agent.plans:
            bus = plan.bus
            # A full cycle of timeouts can exceed the interval: allow for it, then a margin.
            worst_cycle = len(plan.blocks) * bus.timeout * (bus.retries + 1)
            self.progress.expect(bus_mark(bus.name), 3 * max(bus.poll_interval, worst_cycle) + 30)
        up = cfg.uplink
        self.delivery.limit = stall_limit(up)
        self.progress.expect(
            UPLINK_MARK, 2 * (up.backoff_cap + up.publish_timeout + up.keepalive) + 30
        )
        for spec in cfg.platforms:  # each HTTP platform uplink's loop must turn too
            self.progress.expect(
                platform_mark(spec.name), 2 * (spec.backoff_cap + spec.timeout) + 30
            )

    def observe(self, frame: Frame) -> None:
        """A frame was stored in the outbox: polling of its bus and the outbox progress."""
        self.progress.mark(bus_mark(frame.bus))
        self.tracker.observe(frame)
        jump = self.clock.check_due(CLOCK_CHECK)
        if jump is not None:
            self._jump = jump
            self._clock_due.set()

    def stalled(self) -> str | None:
        self.progress.mark(UPLINK_MARK, self.agent.forwarder.stats.last_progress or None)
        for pf in self.agent.platforms:
            self.progress.mark(platform_mark(pf.name), pf.stats.last_progress or None)
        return self.progress.stalled()

    # -- tasks ----------------------------------------------------------------------------

    def start(self, tg: asyncio.TaskGroup) -> None:
        self.tasks = [
            tg.create_task(self._clock_loop(), name="clock"),
            tg.create_task(self._status_loop(), name="status"),
        ]
        interval = watchdog_interval()
        if interval is not None:
            self.watchdog = Watchdog(self.stalled, interval)
            self.tasks.append(tg.create_task(self.watchdog.run(), name="watchdog"))
        sd_notify(f"READY=1\nSTATUS={self.status_line()}\nMAINPID={os.getpid()}")

    async def stop(self) -> None:
        """Cancel the background tasks and leave a final snapshot saying "stopped"."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.write_status("stopped")

    async def _clock_loop(self) -> None:
        next_probe = 0.0
        while True:
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + SYNC_PROBE
                before = self.clock.sync_state
                if await asyncio.to_thread(self.clock.refresh_sync):
                    await self._sync_changed(before)
            jump, self._jump = self._jump, None  # set (with the event) by observe()
            if jump is None:  # the timer: frames may not come
                jump = self.clock.check()
            self._clock_due.clear()
            if jump is not None:
                log.warning(
                    "wall clock jumped %+.3f s (monotonic scheduling is unaffected)", jump.step
                )
                await self.agent.store.put([encode_event("clock_jump", jump.to_event())])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(CLOCK_IDLE, max(0.0, next_probe - now))):
                    await self._clock_due.wait()

    async def _sync_changed(self, before: bool | None) -> None:
        state, source = self.clock.sync_state, self.clock.sync_source
        if state:
            log.info("wall clock is synchronised (%s)", source)
        else:
            log.warning(
                "wall clock is not known to be synchronised (%s): records carry clock_synced"
                " false and quality bit 8",
                source,
            )
        if before is not None or not state:
            await self.agent.store.put(
                [encode_event("clock_sync", {"synced": state, "source": source})]
            )

    async def _status_loop(self) -> None:
        while True:
            await self.write_status()
            await asyncio.sleep(STATUS_EVERY)

    # -- status -----------------------------------------------------------------------------

    def status_line(self) -> str:
        cfg = self.agent.cfg
        up = "connected" if self.agent.forwarder.stats.connected else "down"
        return f"{len(cfg.buses)} bus(es), {len(cfg.points)} points; uplink {up}"

    async def write_status(self, state: str = "running") -> None:
        agent = self.agent
        stats = await agent.outbox.stats()
        now = time.time()
        fw = agent.forwarder.stats
        self.status.update(
            "agent",
            {
                "state": state,
                "pid": os.getpid(),
                "version": __version__,
                "started": round(self.started_wall * 1000),
                "uptime_s": round(time.monotonic() - self.started_mono, 1),
                "config": str(agent.cfg.path),
                "points": len(agent.cfg.points),
                "reloads": self.reloads,
                "watchdog": self.watchdog_state(),
            },
        )
        self.status.update("clock", self.clock.snapshot())
        self.status.update("buses", self.tracker.buses(agent.pollers))
        self.status.update("alarms", _active_alarms(agent))
        oldest = min(stats.oldest_ts.values(), default=None)
        mine = stats.pending_by_consumer.get(agent.forwarder.name, stats.pending_records)
        self.delivery.check(fw, sum(mine.values()))
        self.status.update(
            "outbox",
            {
                "pending_records": stats.pending_records,
                "pending_rows": stats.pending_rows,
                "oldest_unsent": None if oldest is None else round(oldest * 1000),
                "oldest_unsent_age_s": None if oldest is None else round(now - oldest, 1),
                "db_bytes": stats.db_bytes,
                "used_bytes": stats.used_bytes,
                "dropped_records": stats.dropped_records,
            },
        )
        self.status.update(
            "uplink",
            {
                "target": agent.forwarder.uplink.target,
                "connected": fw.connected,
                "messages": fw.messages,
                "records": fw.records,
                "failures": fw.failures,
                "reconnects": fw.reconnects,
                "last_error": fw.last_error,
                "delivery": self.delivery.snapshot(),
            },
        )
        try:
            await asyncio.to_thread(self.status.write, now)
        except OSError as exc:
            if not self._status_failed:
                log.warning("cannot write %s: %s", self.status.path, exc)
            self._status_failed = True
        else:
            if self._status_failed:
                log.info("writing %s again", self.status.path)
            self._status_failed = False
        sd_notify(f"STATUS={self.status_line()}")

    def watchdog_state(self) -> dict[str, Any] | None:
        """None without a systemd watchdog; else its interval and what stalls it (None: ok)."""
        if self.watchdog is None:
            return None
        return {"interval_s": self.watchdog.interval, "stalled": self.stalled()}

    def record_reload(self, outcome: dict[str, Any]) -> None:
        self.reloads = [*self.reloads, outcome][-5:]


def _active_alarms(agent: OpsHost) -> list[dict[str, Any]]:
    """Every active alarm: the comm_loss alarms of the pollers, then the rules' alarms, each
    with what its rule measures in the rule's unit (agent.service.alarm_status)."""
    return [*comm_loss_status(agent.comm.active.values()), *rule_alarm_status(agent.engine)]


def _ms(ts: float) -> int | None:
    return None if math.isnan(ts) else round(ts * 1000)
