"""What the status page reads from the running agent: the `WebSource` interface and its feed.

The page never touches the pollers, the engine or the outbox directly: it reads a `WebSource`.
`AgentFeed` is the one implementation; the supervisor calls `observe(frame)` after each stored
frame (a few numpy assignments) and `start(tg)` / `stop()`. Everything the page shows is built
at most once a second (`live()`), so any number of browsers costs one snapshot copy a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from agent import __version__
from agent.core.model import AgentConfig, AlarmEvent, Frame
from agent.store.history import History

if TYPE_CHECKING:
    from agent.service.ack import AlarmOps
    from agent.service.clock import ClockMonitor
    from agent.service.ops import OpsHost
    from agent.service.runtime_status import DeviceTracker
    from agent.store.journal import Journal

    class OpsPart(Protocol):
        tracker: DeviceTracker
        clock: ClockMonitor
        started_wall: float

    class WebAgent(OpsHost, Protocol):
        """The running agent as the page reads it (supervisor.Agent satisfies it; importing
        the supervisor here would be an import cycle)."""

        @property
        def ops(self) -> OpsPart: ...
        @property
        def journal(self) -> Journal: ...
        @property
        def alarm_ops(self) -> AlarmOps: ...


log = logging.getLogger(__name__)

LIVE_TTL = 1.0  # seconds a live snapshot is reused
OUTBOX_EVERY = 5.0  # seconds between outbox statistics queries


class WebSource(Protocol):
    """The page's view of an agent. `live()` is cheap (cached); the rest are plain reads."""

    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def history(self) -> History: ...

    @property
    def journal_dir(self) -> Path: ...

    @property
    def storage_dir(self) -> Path: ...

    async def operate(self, body: dict[str, object]) -> tuple[bool, str]:
        """An operator request from the page, through the same validation and rules-stage path
        as the operator socket; (accepted, the agent's answer)."""
        ...

    def live(self) -> Mapping[str, Any]:
        """{agent, clock, buses, alarms, uplinks, points: {value, quality, ts}, now}."""
        ...


@dataclass(slots=True)
class _BusTiming:
    last_mono: float = math.nan
    interval: float = math.nan  # smoothed seconds between frames


class AgentFeed:
    """The WebSource of a running Agent, fed by the supervisor."""

    def __init__(self, agent: WebAgent) -> None:
        self.agent = agent
        # The page keeps the points it started with (history columns follow them); a reload
        # that changes the points shows on the page after the next restart.
        self._cfg = agent.cfg
        self._seen, self._same = agent.cfg.points, True
        spec = agent.cfg.web
        self.history = History(
            agent.cfg.storage.dir / "history",
            [p.code for p in agent.cfg.points],
            spec.history_hours,
            spec.history_step,
        )
        self.timing: dict[str, _BusTiming] = {}
        self._live: dict[str, Any] = {}
        self._live_at = -math.inf
        self._outbox: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        # alarm id -> the raise/escalate event behind its current level (bounded by the alarms)
        self.raised: dict[str, AlarmEvent] = {}

    @property
    def cfg(self) -> AgentConfig:
        return self._cfg

    @property
    def journal_dir(self) -> Path:
        return Path(self.agent.journal.directory)

    @property
    def storage_dir(self) -> Path:
        return self.agent.cfg.storage.dir

    async def operate(self, body: dict[str, object]) -> tuple[bool, str]:
        from agent.service.operator import Peer, RequestError, parse_request

        ops = self.agent.alarm_ops
        me = Peer(os.getpid(), os.getuid(), os.getgid())  # the agent itself, on the page's behalf
        try:
            req = parse_request(orjson.dumps(body), me, ops.spec.max_shelve)
        except RequestError as exc:
            return False, str(exc)
        answer = await ops.request(req)
        return answer.ok, answer.text

    def observe(self, frame: Frame) -> None:
        if not self._same_points():
            return  # a reload changed the points: the page shows them after a restart
        self.history.observe(frame)
        tm = self.timing.setdefault(frame.bus, _BusTiming())
        now = time.monotonic()
        if not math.isnan(tm.last_mono):
            gap = now - tm.last_mono
            tm.interval = gap if math.isnan(tm.interval) else 0.8 * tm.interval + 0.2 * gap
        tm.last_mono = now

    def note(self, events: Sequence[AlarmEvent]) -> None:
        for ev in events:
            if ev.transition in ("raise", "escalate", "deescalate"):
                self.raised[ev.alarm_id] = ev
            elif ev.transition == "clear":
                self.raised.pop(ev.alarm_id, None)

    def _same_points(self) -> bool:
        """False once a reload changed the point list (checked once per reload, not per frame)."""
        pts = self.agent.cfg.points
        if pts is not self._seen:
            self._seen = pts
            self._same = [p.code for p in pts] == [p.code for p in self._cfg.points]
        return self._same

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._outbox_loop(), name="web:outbox-stats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.history.close()

    async def _outbox_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the page shows stale figures, never fails
                st = await self.agent.outbox.stats()
                self._outbox = {
                    "pending": dict(st.pending_records),
                    "by_consumer": dict(getattr(st, "pending_by_consumer", {}) or {}),
                    "oldest": min(st.oldest_ts.values(), default=None),
                    "oldest_by": {
                        c: min(v.values(), default=None)
                        for c, v in (getattr(st, "oldest_by_consumer", {}) or {}).items()
                    },
                }
            await asyncio.sleep(OUTBOX_EVERY)

    def live(self) -> Mapping[str, Any]:
        now = time.monotonic()
        if now - self._live_at >= LIVE_TTL:
            self._live = self._build()
            self._live_at = now
        return self._live

    def _build(self) -> dict[str, Any]:
        agent = self.agent
        ops = agent.ops
        buses = ops.tracker.buses(agent.pollers)
        for bus in buses:
            tm = self.timing.get(bus["name"], _BusTiming())
            bus["interval"] = _num(tm.interval)
        return {
            "now": time.time(),
            "agent": {"version": __version__, "started": ops.started_wall},
            "clock": ops.clock.snapshot(),
            "buses": buses,
            "alarms": [
                *(_comm_loss(ev) for ev in sorted(agent.comm.active.values(), key=_by_id)),
                *(_alarm(a, self.raised.get(a.alarm_id)) for a in agent.engine.active()),
            ],
            "uplinks": self._uplinks(),
        }

    def _uplinks(self) -> list[dict[str, Any]]:
        """MQTT and each platform: connection, pending records (per uplink), last error."""
        agent = self.agent
        by_consumer = self._outbox.get("by_consumer", {})
        out = []
        for fw in (agent.forwarder, *agent.platforms):
            mine = by_consumer.get(fw.name)
            out.append(
                {
                    "name": "MQTT" if fw is agent.forwarder else fw.name,
                    "target": fw.uplink.target,
                    "connected": fw.stats.connected,
                    "pending": None if mine is None else sum(mine.values()),
                    # the oldest record this uplink has not acknowledged (its own cursor)
                    "oldest": self._outbox.get("oldest_by", {}).get(fw.name),
                    "last_error": fw.stats.last_error or None,
                }
            )
        return out


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def _by_id(ev: AlarmEvent) -> str:
    return ev.alarm_id


def _comm_loss(ev: AlarmEvent) -> dict[str, Any]:
    """A raised comm_loss alarm (they bypass the engine): its quantity is the seconds without
    an answer so far."""
    return {
        "alarm_id": ev.alarm_id,
        "device": ev.device,
        "key": ev.key,
        "kind": ev.kind,
        "direction": ev.direction,
        "level": ev.level,
        "since": ev.ts,
        "value": round(max(0.0, time.time() - ev.ts), 1),
        "threshold": None,
        "unit": "s without an answer",
        "acked": False,
        "shelved_until": None,
    }


def _alarm(a: Any, ev: AlarmEvent | None) -> dict[str, Any]:
    """An active alarm; quantity and threshold from its event when known (a rate alarm's
    quantity is the rate, not the reading), else the engine's current view."""
    return {
        "alarm_id": a.alarm_id,
        "device": a.device,
        "key": a.key,
        "kind": a.kind,
        "direction": a.direction,
        "level": a.level,
        "since": _num(a.since),
        "value": _num(a.value if ev is None else ev.value),
        "threshold": _num(a.threshold if ev is None else ev.threshold),
        "unit": a.unit if ev is None else ev.unit,
        "acked": a.acked,
        "shelved_until": a.shelved_until,
    }
