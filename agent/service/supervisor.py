"""The supervisor: wires bus pollers → rule engine → journal + outbox → forwarder, and stops
them in an order that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from agent import __version__
from agent.core.model import AgentConfig, AlarmEvent, Frame
from agent.rules import RuleEngine
from agent.service.ack import AlarmOps, make_journal
from agent.service.clock import ClockMonitor
from agent.service.comm import BusLinkEvents, CommAlarms, with_readings
from agent.service.health import Health
from agent.service.ops import Ops
from agent.service.reload import reload_config
from agent.service.systemd import sd_notify
from agent.service.web import WebHook
from agent.source.plan import BusPlan, compile_config_plan
from agent.source.poller import BusPoller
from agent.store.guard import StoreGuard
from agent.store.journal import stamp
from agent.store.outbox import Entry, Outbox
from agent.uplink.forwarder import Forwarder, mqtt_forwarder
from agent.uplink.mqtt import CONSUMER as MQTT_CONSUMER
from agent.uplink.mqtt import MqttUplink
from agent.uplink.payload import encode_alarms, encode_event, encode_telemetry
from drivers.registry import make_source

log = logging.getLogger(__name__)

FRAME_QUEUE_SIZE = 64  # frames waiting for the rules/outbox stage; a full queue slows pollers


class Agent:
    """One running agent. `run()` returns when `stop()` is called, after a clean drain."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.plans: tuple[BusPlan, ...] = compile_config_plan(cfg)
        self.engine = RuleEngine(cfg.points)
        self.alarm_ops = AlarmOps(cfg.storage.dir, lambda: self.engine, cfg.operator_spec)
        self.outbox = Outbox(
            cfg.storage.dir / "outbox.db",
            cfg.storage.max_bytes,
            sync_interval=cfg.storage.sync_interval,
            # every uplink is a consumer with its own progress: MQTT and each platform
            consumers=(MQTT_CONSUMER, *(p.name for p in cfg.platforms)),
        )
        self.store = StoreGuard(self.outbox)  # survives a full or read-only disk
        self.journal = make_journal(cfg)
        self.frames: asyncio.Queue[Frame] = asyncio.Queue(FRAME_QUEUE_SIZE)
        self.clock = ClockMonitor()
        # comm_loss alarms from the pollers (device quarantine)
        self.comm = CommAlarms(names_zh={p.device: p.device_zh for p in cfg.points})
        self.links = BusLinkEvents()  # bus_down / bus_up events from the pollers
        self.pollers = self._make_pollers()
        self.forwarder = self._make_forwarder()
        self.platforms = self._make_platforms()  # [[platforms]]: HTTP uplinks beside MQTT
        self.ops = Ops(self, self.clock)
        self.health = Health(cfg, self.outbox, self.forwarder, self.store, self.ops.status)
        self.health.platforms = self.platforms
        self.health.delivery, self.health.watchdog = self.ops.delivery, self.ops.watchdog_state
        self.web = WebHook(self)  # the status page ([web]); does nothing when disabled
        self.health.journal = self.journal
        self._stop = asyncio.Event()
        self.frames_processed = 0
        self._tg: asyncio.TaskGroup | None = None
        self._poll_tasks: list[asyncio.Task[None]] = []
        self._fwd_task: asyncio.Task[None] | None = None
        self._platform_tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._journal_failed = False  # the journal refused the last append (logged once)

    def _make_pollers(self) -> list[BusPoller]:
        return [
            BusPoller(
                plan,
                make_source(plan.bus),
                self.frames.put,
                clock_synced=self.clock.synced,
                on_device=self.comm.note,
                on_link=self.links.note,
            )
            for plan in self.plans
        ]

    def _make_platforms(self) -> list[Forwarder]:
        if not self.cfg.platforms:  # httpx and cryptography are imported only when configured
            return []
        from agent.uplink.platforms.forwarder import make_platform_forwarder

        return [
            make_platform_forwarder(self.outbox.consumer(p.name), p, self.cfg.storage.dir)
            for p in self.cfg.platforms
        ]

    def _make_forwarder(self) -> Forwarder:
        cfg = self.cfg
        return mqtt_forwarder(
            self.outbox.consumer(MQTT_CONSUMER),
            MqttUplink(cfg.uplink, cfg.site, status_topic=cfg.topic("status")),
            cfg.site,
            cfg.uplink,
            topic=cfg.topic,
            clock_synced=self.clock.synced,
        )

    def start_pollers(self) -> None:
        """(Re)create the pollers for self.plans and start them in the running TaskGroup."""
        assert self._tg is not None, "start_pollers() outside run()"
        self.pollers = self._make_pollers()
        self._poll_tasks = [
            self._tg.create_task(p.run(), name=f"bus:{p.plan.bus.name}") for p in self.pollers
        ]

    async def stop_pollers(self) -> None:
        """Stop reading, then wait until every frame already read is stored."""
        for t in self._poll_tasks:
            t.cancel()
        await asyncio.gather(*self._poll_tasks, return_exceptions=True)
        await self.frames.join()

    async def restart_forwarder(self) -> None:
        """Replace the forwarder (new uplink settings) over the same outbox."""
        assert self._tg is not None, "restart_forwarder() outside run()"
        if self._fwd_task is not None:
            self._fwd_task.cancel()
            await asyncio.gather(self._fwd_task, return_exceptions=True)
        self.forwarder = self._make_forwarder()
        self.health.forwarder = self.forwarder  # health reports the uplink that now runs
        self._fwd_task = self._tg.create_task(self.forwarder.run(), name="uplink")

    def request_reload(self) -> None:
        """SIGHUP: re-read the config (agent.service.reload); reloads never overlap."""
        tg = self._tg
        if tg is None or self._stop.is_set():
            return

        async def _reload() -> None:
            async with self._reload_lock:
                if not self._stop.is_set():
                    await reload_config(self)

        tg.create_task(_reload(), name="reload")

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.cfg.storage.dir.mkdir(parents=True, exist_ok=True)
        self.alarm_ops.restore()
        await self.outbox.open()
        try:
            await self.store.put(  # the guard: a read-only or full disk must not stop us
                [
                    encode_event(
                        "agent_started", {"version": __version__, "points": len(self.cfg.points)}
                    )
                ]
            )
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._poll_tasks = [
                    tg.create_task(p.run(), name=f"bus:{p.plan.bus.name}") for p in self.pollers
                ]
                rules_task = tg.create_task(self._process(), name="rules")
                self._fwd_task = tg.create_task(self.forwarder.run(), name="uplink")
                self._platform_tasks = [
                    tg.create_task(pf.run(), name=f"uplink:{pf.name}") for pf in self.platforms
                ]
                self.ops.start(tg)
                self.web.start(tg)
                operator_task = tg.create_task(self.alarm_ops.serve(), name="operator")
                health_task = tg.create_task(self.health.run(), name="health")
                stop_task = tg.create_task(self._stop.wait(), name="stop")
                await stop_task
                sd_notify("STOPPING=1")
                operator_task.cancel()
                async with self._reload_lock:  # a reload in progress finishes first
                    # Order matters: stop reading, store what was read, then let the uplink go.
                    await self.stop_pollers()
                    await self.ops.stop()
                    await self.web.stop()
                    rules_task.cancel()
                    health_task.cancel()
                    if self._fwd_task is not None:
                        self._fwd_task.cancel()
                    for t in self._platform_tasks:
                        t.cancel()
        finally:
            await self.outbox.close()

    async def _process(self) -> None:
        """Rules, journal and outbox for every frame; one outbox transaction per wake-up."""
        while True:
            batch = [await self.frames.get()]
            points = self.cfg.points  # a reload swaps it only while no frame is pending
            while not self.frames.empty():
                batch.append(self.frames.get_nowait())
            entries: list[Entry] = self.links.drain() + self.alarm_ops.drain()
            for frame in batch:
                comm = self.comm.drain()
                events = self.alarm_ops.step(frame)
                if comm:  # a restore carries the device's first readings (platforms: avx)
                    events = with_readings(comm, points, self.engine.latest) + events
                entries.append(encode_telemetry(frame, points))
                if events:
                    events = await self._journal(events)
                    entries.append(encode_alarms(events))
                    self.web.note(events)
                    for ev in events:
                        log.warning("alarm %s %s: %s", ev.transition, ev.alarm_id, ev.text_en)
            await self.store.put(entries)
            self.alarm_ops.settle()
            for frame in batch:
                self.ops.observe(frame)
                self.web.observe(frame)
            self.frames_processed += len(batch)
            for _ in batch:
                self.frames.task_done()

    async def _journal(self, events: list[AlarmEvent]) -> list[AlarmEvent]:
        """Append to the local journal; a disk error there must not stop alarm delivery.
        Returns the events stamped with their journal line (agent.store.journal.stamp)."""
        try:
            heads = await asyncio.to_thread(self.journal.append, events)
        except OSError as exc:
            if not self._journal_failed:
                log.error("cannot write the alarm journal in %s: %s", self.journal.directory, exc)
            self._journal_failed = True
            return events
        else:
            if self._journal_failed:
                log.warning("writing the alarm journal again")
            self._journal_failed = False
            return stamp(events, heads)


async def run_until_signalled(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; return the process exit code."""
    agent = Agent(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    started = time.monotonic()
    try:
        await agent.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("dust-agent stopped after %.1f s", time.monotonic() - started)
    return 0
