"""A site's register map, served: every device of an agent config, its points encoded exactly
as the config declares them (table, address, type, order, scale, offset, bit).

`SiteModel(cfg)` holds one `PointTrack` per point (its normal signal from
`firmware_sim.signals`, plus the scenario timeline) and answers register reads per bus:
`registers(bus)` is the `(unit, fc, address, count) -> values | exception code` function both
servers (Modbus TCP, RTU) call at the instant of each read. Addresses between points of a
table read as 0 (the agent's gap fill reads them); beyond a table's last point they are an
illegal address (exception 2), as on a real controller.

Time: `clock()` is plant seconds since `start_clock()`; the scenario time is plant time x
`speed` (the timeline and the physics run `speed` times faster).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.core.model import AgentConfig, PointSpec
from firmware_sim.codec import WIDTH, encode
from firmware_sim.server import Fault
from firmware_sim.signals import fit_differences, normal_signal
from firmware_sim.timeline import PointTrack, Timeline

ILLEGAL_ADDRESS = 2
TABLE_OF_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
SILENT = Fault(no_answer=True)

RegisterFn = Callable[[int, int, int, int], list[int] | int]


@dataclass
class Unit:
    """One Modbus unit on one bus: its points per table and each table's extent."""

    bus: str
    unit: int
    devices: list[str] = field(default_factory=list)
    tables: dict[str, list[PointSpec]] = field(default_factory=dict)

    def extent(self, table: str) -> int:
        return max((p.address + _width(p) for p in self.tables.get(table, [])), default=0)


def _width(p: PointSpec) -> int:
    return 1 if p.table in ("coil", "discrete") or p.bit is not None else WIDTH[p.type]


class SiteModel:
    """The simulated controllers of a site config."""

    def __init__(
        self,
        cfg: AgentConfig,
        timeline: Timeline | None = None,
        *,
        seed: int = 0,
        speed: float = 1.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.cfg = cfg
        self.timeline = timeline or Timeline()
        self.speed = speed
        signals = fit_differences(cfg.points, [normal_signal(p, seed) for p in cfg.points])
        self.signals = signals
        self.tracks = [
            PointTrack(signals[p.index].value, self.timeline.for_point(f"{p.device}.{p.key}"))
            for p in cfg.points
        ]
        self.units: dict[tuple[str, int], Unit] = {}
        self.device_unit: dict[str, tuple[str, int]] = {}
        for p in cfg.points:
            u = self.units.setdefault((p.bus, p.unit_id), Unit(p.bus, p.unit_id))
            if p.device not in u.devices:
                u.devices.append(p.device)
            u.tables.setdefault(p.table, []).append(p)
            self.device_unit[p.device] = (p.bus, p.unit_id)
        self.overrides: dict[str, Fault] = {}  # device -> fault set at run time
        self.unit_faults: dict[tuple[str, int], Fault] = {}  # (bus, unit) -> fault (--fault)
        self.links_down: set[str] = set()  # buses taken down at run time
        self._t0: float | None = None  # None: the clock has not started (reads as 0)
        self._check_targets()

    def _check_targets(self) -> None:
        known = {f"{p.device}.{p.key}" for p in self.cfg.points}
        buses = {b.name for b in self.cfg.buses}
        for a in self.timeline.points:
            if a.target not in known:
                raise ValueError(f"scenario point {a.target!r} is not in the config")
        for d in self.timeline.devices:
            if d.device not in self.device_unit:
                raise ValueError(f"scenario device {d.device!r} is not in the config")
        for link in self.timeline.links:
            if link.bus not in buses:
                raise ValueError(f"scenario bus {link.bus!r} is not in the config")

    # --- time --------------------------------------------------------------------------------

    def start_clock(self) -> None:
        self._t0 = time.monotonic()

    def clock(self) -> float:
        """Plant seconds since start_clock() (0 until then: the plant waits at its start)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def scenario_time(self, t: float | None = None) -> float:
        return (self.clock() if t is None else t) * self.speed

    # --- values ------------------------------------------------------------------------------

    def value(self, p: PointSpec, t: float) -> float:
        """The point's engineering value at plant time `t`. A counter wraps at its register
        width (a transmitter saturates, a counter rolls over)."""
        value = self.tracks[p.index].value(t * self.speed)
        if self.signals[p.index].shape == "counter" and not p.type.startswith("float"):
            span = 1 << (16 * WIDTH[p.type])
            raw = round((value - p.offset) / p.scale) % span
            value = raw * p.scale + p.offset
        return value

    def unit_ids(self, bus: str) -> list[int]:
        return sorted(u for b, u in self.units if b == bus)

    def fault(self, bus: str, unit: int, t: float | None = None) -> Fault | None:
        """The fault of a unit now: a run-time override, else the timeline's; a bus that is
        down answers nothing."""
        s = self.scenario_time(t)
        if bus in self.links_down or not self.timeline.link_up(bus, s):
            return SILENT
        u = self.units.get((bus, unit))
        if u is None:
            return None
        if (bus, unit) in self.unit_faults:
            return self.unit_faults[(bus, unit)]
        for device in u.devices:
            fault = self.overrides.get(device) or self.timeline.fault(device, s)
            if fault is not None:
                return fault
        return None

    def read(
        self, bus: str, unit: int, fc: int, address: int, count: int, *, t: float
    ) -> list[int] | int:
        """Values of a read request at plant time `t`, or a Modbus exception code."""
        u = self.units.get((bus, unit))
        table = TABLE_OF_FC.get(fc)
        if u is None or table is None or address + count > u.extent(table) or count < 1:
            return ILLEGAL_ADDRESS
        out = [0] * count
        end = address + count
        for p in u.tables[table]:
            width = _width(p)
            if p.address + width <= address or p.address >= end:
                continue
            value = self.value(p, t)
            if p.table in ("coil", "discrete"):
                out[p.address - address] = 1 if value >= 0.5 else 0
                continue
            if p.bit is not None:
                if value >= 0.5:
                    out[p.address - address] |= 1 << p.bit
                continue
            regs = encode(value, p.type, p.order, p.scale, p.offset)
            for i, reg in enumerate(regs):
                k = p.address + i - address
                if 0 <= k < count:
                    out[k] = reg
        return out

    def registers(self, bus: str) -> RegisterFn:
        """The read function of one bus, at the time of each call."""

        def registers(unit: int, fc: int, address: int, count: int) -> list[int] | int:
            return self.read(bus, unit, fc, address, count, t=self.clock())

        return registers
