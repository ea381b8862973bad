"""Communication-loss alarms: device quarantine transitions from the pollers as AlarmEvents.

One alarm per device, id `<device>:comm_loss`, level 报警 alarm: raised when the device is
quarantined (it stopped answering), cleared when it answers again. The pollers call `note()`
from their task; the supervisor's rules stage `drain()`s the events with the next frames and
routes them like every other alarm (journal + outbox alarm stream). The queue is capped: a
flapping line cannot grow it without bound; what is dropped is counted.

Bus links: `BusLinkEvents` turns the pollers' LinkChanges into `bus_down` / `bus_up` gateway
events (event stream, docs/payloads.md), drained by the same rules stage.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from agent.core.model import AlarmEvent, PointSpec
from agent.source.poller import DeviceChange, LinkChange
from agent.store.outbox import Entry
from agent.uplink.payload import encode_event

MAX_PENDING = 10_000


def comm_loss_events(
    change: DeviceChange, names_zh: Mapping[str, str] | None = None
) -> list[AlarmEvent]:
    """The alarm transitions for one DeviceChange (one per device on that unit); Chinese texts
    name a device by its `name_zh` where `names_zh` has one."""
    out = []
    where = f"bus {change.bus} unit {change.unit}"
    for device in change.devices:
        zh_name = (names_zh or {}).get(device) or device
        if change.lost:
            zh, en = (
                f"{zh_name} 通讯中断",
                f"{device} communication lost ({where}): {change.reason}",
            )
        else:
            zh, en = f"{zh_name} 通讯恢复", f"{device} communication restored ({where})"
        out.append(
            AlarmEvent(
                alarm_id=f"{device}:comm_loss",
                point=device,
                device=device,
                key="comm_loss",
                direction="none",
                transition="raise" if change.lost else "clear",
                level="alarm" if change.lost else None,
                prev_level=None if change.lost else "alarm",
                value=0.0 if change.lost else 1.0,  # 0: not answering, 1: answering
                threshold=0.0,
                unit="",
                ts=change.ts,
                text_zh=zh,
                text_en=en,
                kind="comm_loss",
            )
        )
    return out


def with_readings(
    events: list[AlarmEvent], points: Sequence[PointSpec], latest: Callable[[int], float]
) -> list[AlarmEvent]:
    """comm_loss clears with the readings of the device's points (`readings`: {code: value})
    from `latest(index)` (the engine's latest reading), so that a platform that gets the
    points' status back also gets their measured values; raises have none."""
    out = []
    for ev in events:
        readings = {}
        if ev.kind == "comm_loss" and ev.level is None:
            readings = {
                p.code: v
                for p in points
                if p.device == ev.device and math.isfinite(v := latest(p.index))
            }
        out.append(replace(ev, extra={**ev.extra, "readings": readings}) if readings else ev)
    return out


class CommAlarms:
    """Pending comm_loss events between the pollers and the rules stage (bounded)."""

    def __init__(self, cap: int = MAX_PENDING, names_zh: Mapping[str, str] | None = None) -> None:
        self._pending: deque[AlarmEvent] = deque()
        self.cap = cap
        self.dropped = 0
        self.active: dict[str, AlarmEvent] = {}  # raised and not cleared, by alarm id (status)
        self.names_zh = dict(names_zh or {})  # device -> its Chinese name, for the texts

    def note(self, change: DeviceChange) -> None:
        for ev in comm_loss_events(change, self.names_zh):
            if ev.transition == "raise":
                self.active[ev.alarm_id] = ev
            else:
                self.active.pop(ev.alarm_id, None)
            if len(self._pending) >= self.cap:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(ev)

    def drain(self) -> list[AlarmEvent]:
        out = list(self._pending)
        self._pending.clear()
        return out


def link_event(change: LinkChange) -> Entry:
    """`bus_down` {bus, reason} or `bus_up` {bus, outage_s} as an event-stream entry."""
    if change.down:
        return encode_event("bus_down", {"bus": change.bus, "reason": change.reason}, change.ts)
    data = {"bus": change.bus, "outage_s": round(change.outage_s, 1)}
    return encode_event("bus_up", data, change.ts)


class BusLinkEvents:
    """Pending bus_down / bus_up events between the pollers and the rules stage (bounded: a
    flapping link drops the oldest and counts them)."""

    def __init__(self, cap: int = MAX_PENDING) -> None:
        self._pending: deque[Entry] = deque()
        self.cap = cap
        self.dropped = 0

    def note(self, change: LinkChange) -> None:
        if len(self._pending) >= self.cap:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(link_event(change))

    def drain(self) -> list[Entry]:
        out = list(self._pending)
        self._pending.clear()
        return out
