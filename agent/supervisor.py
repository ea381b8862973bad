"""The supervisor: wires bus pollers → rule engine → journal + outbox → forwarder, and stops
them in an order that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from agent import __version__
from agent.forwarder import Forwarder
from agent.journal import Journal
from agent.model import AgentConfig, Frame
from agent.mqtt import MqttUplink
from agent.outbox import Entry, Outbox
from agent.payload import encode_alarms, encode_event, encode_telemetry
from agent.plan import BusPlan, compile_config_plan
from agent.poller import BusPoller
from agent.rules import RuleEngine
from drivers.modbus_tcp import ModbusTcpSource

log = logging.getLogger(__name__)

FRAME_QUEUE_SIZE = 64  # frames waiting for the rules/outbox stage; a full queue slows pollers


class Agent:
    """One running agent. `run()` returns when `stop()` is called, after a clean drain."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.plans: tuple[BusPlan, ...] = compile_config_plan(cfg)
        self.engine = RuleEngine(cfg.points)
        self.outbox = Outbox(cfg.storage.dir / "outbox.db", cfg.storage.max_bytes)
        self.journal = Journal(
            cfg.storage.dir / "journal", cfg.storage.journal_max_bytes, cfg.storage.journal_keep
        )
        self.frames: asyncio.Queue[Frame] = asyncio.Queue(FRAME_QUEUE_SIZE)
        self.pollers = [
            BusPoller(
                plan,
                ModbusTcpSource(
                    plan.bus.host,
                    plan.bus.port,
                    timeout=plan.bus.timeout,
                    retries=plan.bus.retries,
                    name=plan.bus.name,
                ),
                self.frames.put,
            )
            for plan in self.plans
        ]
        self.forwarder = Forwarder(
            self.outbox,
            MqttUplink(cfg.uplink, cfg.site, status_topic=cfg.topic("status")),
            cfg.site,
            cfg.uplink,
            topic=cfg.topic,
        )
        self._stop = asyncio.Event()
        self.frames_processed = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.cfg.storage.dir.mkdir(parents=True, exist_ok=True)
        await self.outbox.open()
        try:
            await self.outbox.put(
                [
                    encode_event(
                        "agent_started", {"version": __version__, "points": len(self.cfg.points)}
                    )
                ]
            )
            async with asyncio.TaskGroup() as tg:
                poll_tasks = [
                    tg.create_task(p.run(), name=f"bus:{p.plan.bus.name}") for p in self.pollers
                ]
                rules_task = tg.create_task(self._process(), name="rules")
                fwd_task = tg.create_task(self.forwarder.run(), name="uplink")
                stop_task = tg.create_task(self._stop.wait(), name="stop")
                await stop_task
                # Order matters: stop reading, store what was read, then let the uplink go.
                for t in poll_tasks:
                    t.cancel()
                await asyncio.gather(*poll_tasks, return_exceptions=True)
                await self.frames.join()
                rules_task.cancel()
                fwd_task.cancel()
        finally:
            await self.outbox.close()

    async def _process(self) -> None:
        """Rules, journal and outbox for every frame; one outbox transaction per wake-up."""
        points = self.cfg.points
        while True:
            batch = [await self.frames.get()]
            while not self.frames.empty():
                batch.append(self.frames.get_nowait())
            entries: list[Entry] = []
            for frame in batch:
                events = self.engine.step(frame)
                entries.append(encode_telemetry(frame, points))
                if events:
                    await asyncio.to_thread(self.journal.append, events)
                    entries.append(encode_alarms(events))
                    for ev in events:
                        log.warning("alarm %s %s: %s", ev.transition, ev.alarm_id, ev.text_en)
            await self.outbox.put(entries)
            self.frames_processed += len(batch)
            for _ in batch:
                self.frames.task_done()


async def run_until_signalled(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; return the process exit code."""
    agent = Agent(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    started = time.monotonic()
    try:
        await agent.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("dust-agent stopped after %.1f s", time.monotonic() - started)
    return 0
