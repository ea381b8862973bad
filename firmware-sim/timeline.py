"""Scenario timelines: what happens to which point, device or bus, and when.

A timeline is a list of actions at times (scenario seconds from the start). Point actions
change the value a point serves; each applies on top of the ones before it on that point
(so a ramp keeps the signal's noise):

    set = V [over = S]        the value becomes V (linearly over S seconds)
    step = D [over = S]       + D
    scale = K [over = S]      x K (a broken bag: ΔP x 0.35)
    ramp = R [until = U]      + R per second from now, stopping at the value U
    noise = A [period = P]    + smooth noise of amplitude A (knots every P s, default 1)
    hold = true               frozen at the value it had at that instant (a stuck sensor)
    count = N [over = S]      a counter: N more events, spread over S seconds
    flip = true               a bit or 0/1 state: 1 - value
    normal = true             back to the normal signal (drops every earlier action)

Device actions (`fault = ...`): silent, busy (exception 6), exception=N, slow=S (delay),
crc, garbage (RTU: bad CRC / random bytes; on Modbus TCP both send random bytes),
max_count=N, recovered. Bus actions (`link = "down" | "up"`): a TCP listener closes (every
connection drops) and reopens on the same port; an RTU line goes silent.

Pure: `PointTrack.value(s)` is a function of the scenario time `s` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_sim.plant import value_noise
from firmware_sim.server import Fault

ValueFn = Callable[[float], float]
POINT_ACTIONS = ("set", "step", "scale", "ramp", "noise", "hold", "count", "flip", "normal")
FAULT_WORDS = {"silent": "no_answer", "busy": "exception=6", "recovered": "none"}


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the entry and the key."""


@dataclass(frozen=True, slots=True)
class PointAction:
    at: float
    target: str  # "DEVICE.KEY"
    op: str
    arg: float = 0.0
    over: float = 0.0
    until: float | None = None
    period: float = 1.0

    def describe(self) -> str:
        extra = f" over {self.over:g} s" if self.over else ""
        extra += f" until {self.until:g}" if self.until is not None else ""
        arg = "" if self.op in ("hold", "flip", "normal") else f" {self.arg:g}"
        return f"t={self.at:g}s {self.target} {self.op}{arg}{extra}"


@dataclass(frozen=True, slots=True)
class DeviceAction:
    at: float
    device: str
    fault: Fault | None  # None: recovered
    spec: str

    def describe(self) -> str:
        return f"t={self.at:g}s {self.device} {self.spec}"


@dataclass(frozen=True, slots=True)
class LinkAction:
    at: float
    bus: str
    up: bool

    def describe(self) -> str:
        return f"t={self.at:g}s bus {self.bus} {'up' if self.up else 'down'}"


@dataclass(frozen=True, slots=True)
class Timeline:
    points: tuple[PointAction, ...] = ()
    devices: tuple[DeviceAction, ...] = ()
    links: tuple[LinkAction, ...] = ()

    def for_point(self, target: str) -> list[PointAction]:
        return sorted((a for a in self.points if a.target == target), key=lambda a: a.at)

    def fault(self, device: str, s: float) -> Fault | None:
        """The device's fault at scenario time `s` (the latest action at or before it)."""
        current: Fault | None = None
        for a in sorted(self.devices, key=lambda a: a.at):
            if a.device == device and a.at <= s:
                current = a.fault
        return current

    def link_up(self, bus: str, s: float) -> bool:
        up = True
        for a in sorted(self.links, key=lambda a: a.at):
            if a.bus == bus and a.at <= s:
                up = a.up
        return up

    def describe(self) -> list[str]:
        acts: list[PointAction | DeviceAction | LinkAction] = [
            *self.points,
            *self.devices,
            *self.links,
        ]
        return [a.describe() for a in sorted(acts, key=lambda a: a.at)]


def _frac(a: PointAction, s: float) -> float:
    if a.over <= 0:
        return 1.0
    return min(max((s - a.at) / a.over, 0.0), 1.0)


def _apply(a: PointAction, prev: ValueFn, base: ValueFn) -> ValueFn:
    """The value function after action `a`, given the one before it."""
    if a.op == "set":
        return lambda s: prev(a.at) + (a.arg - prev(a.at)) * _frac(a, s)
    if a.op == "step":
        return lambda s: prev(s) + a.arg * _frac(a, s)
    if a.op == "scale":
        return lambda s: prev(s) * (1.0 + (a.arg - 1.0) * _frac(a, s))
    if a.op == "ramp":
        until = a.until

        def ramp(s: float) -> float:
            v = prev(s) + a.arg * (s - a.at)
            if until is None:
                return v
            return min(v, until) if a.arg >= 0 else max(v, until)

        return ramp
    if a.op == "noise":
        return lambda s: prev(s) + a.arg * value_noise(0, 99, int(a.at * 1000), s, a.period)
    if a.op == "hold":
        return lambda s: prev(a.at)
    if a.op == "count":
        return lambda s: prev(s) + math.floor(a.arg * _frac(a, s) + 1e-9)
    if a.op == "flip":
        return lambda s: 1.0 - prev(s)
    return base  # normal


@dataclass
class PointTrack:
    """One point's value over scenario time: its normal signal with the timeline applied."""

    base: ValueFn
    actions: list[PointAction] = field(default_factory=list)
    _fns: list[ValueFn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._fns = [self.base]
        for a in self.actions:
            self._fns.append(_apply(a, self._fns[-1], self.base))

    def value(self, s: float) -> float:
        k = 0
        while k < len(self.actions) and self.actions[k].at <= s:
            k += 1
        return self._fns[k](s)


# --- parsing ---------------------------------------------------------------------------------


def _num(entry: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _point_action(entry: Mapping[str, Any], at: float, where: str) -> PointAction:
    ops = [op for op in POINT_ACTIONS if op in entry]
    if len(ops) != 1:
        raise ScenarioError(
            f"{where}: a point entry needs exactly one of {', '.join(POINT_ACTIONS)}"
        )
    op = ops[0]
    target = str(entry["point"])
    if "." not in target:
        raise ScenarioError(f"{where}.point: use DEVICE.KEY, got {target!r}")
    flag = op in ("hold", "flip", "normal")
    arg = 0.0 if flag else _num(entry, op, where)
    until = _num(entry, "until", where) if "until" in entry else None
    return PointAction(
        at,
        target,
        op,
        arg,
        _num(entry, "over", where, 0.0),
        until,
        _num(entry, "period", where, 1.0),
    )


def _device_action(entry: Mapping[str, Any], at: float, where: str) -> DeviceAction:
    spec = str(entry["fault"])
    words = [
        FAULT_WORDS.get(w.strip(), w.strip().replace("slow=", "delay=")) for w in spec.split(",")
    ]
    try:
        fault = Fault.parse(",".join(words))
    except ValueError as exc:
        raise ScenarioError(f"{where}.fault: {exc} (or silent, busy, slow=S, recovered)") from None
    return DeviceAction(at, str(entry["device"]), fault if fault.active else None, spec)


def parse_timeline(entries: list[Any]) -> Timeline:
    """`[[timeline]]` entries of a scenario file."""
    points: list[PointAction] = []
    devices: list[DeviceAction] = []
    links: list[LinkAction] = []
    for i, entry in enumerate(entries):
        where = f"timeline[{i}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: expected a table")
        at = _num(entry, "at", where)
        if "point" in entry:
            points.append(_point_action(entry, at, where))
        elif "fault" in entry and "device" in entry:
            devices.append(_device_action(entry, at, where))
        elif "link" in entry and "bus" in entry:
            if entry["link"] not in ("up", "down"):
                raise ScenarioError(f"{where}.link: 'up' or 'down', got {entry['link']!r}")
            links.append(LinkAction(at, str(entry["bus"]), entry["link"] == "up"))
        else:
            raise ScenarioError(
                f"{where}: needs point = 'DEVICE.KEY' (with an action), device + fault, "
                "or bus + link"
            )
    return Timeline(tuple(points), tuple(devices), tuple(links))
