"""The plant model: dust-collector physics, scenarios and the register encoding.

Pure and deterministic: every value is a function of (seed, unit, t) only, where `t` is the
plant time in seconds since the simulator started. No I/O, no clocks, no global state, so the
unit tests can ask for any instant and the server can recompute the registers at the moment a
client reads them.

What a dry dust collector 干式除尘器 does here (per unit, with small per-unit variations):

- differential pressure 进出口压差: a sawtooth between ~950 and ~1250 Pa. The filter cake
  builds up (ΔP rises linearly) and each cleaning pulse knocks it off (ΔP drops at once).
  The pulse period is 20-30 s, fixed per unit.
- pulse-cleaning air pressure 脉冲清灰气源压力: ~0.62 MPa, dipping ~0.10 MPa at each pulse
  and recovering within a few seconds.
- inlet ~25 °C, outlet ~27 °C, hopper ~37.5 °C (± ~1 °C slow wander), all with small noise.
- fan running = 1, air-lock valve running = 1, spark count = 0.

Scenario `smoulder` 阴燃 (unit 1 by default): from scenario time 10 s the hopper temperature
climbs 1 °C/s, passing the warning threshold 60 °C at ~32 s and the alarm threshold 70 °C at
~42 s, then levels off at ~85 °C. A real hopper smoulder takes tens of minutes: this runs
**~60x faster than a real smoulder** so that a demo shows it within a minute. The scenario
clock is `t * speed`, so `speed=0.5` halves the rate again; the collector's own cycle (pulses)
is not scaled.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

from firmware_sim.wet import WET_UNITS, WetState, wet_state

ValueType = Literal["uint16", "int16", "uint32", "int32", "float32"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]

_MASK64 = (1 << 64) - 1

# Byte permutation from the big-endian (ABCD) packing to the wire order, per word order.
_BYTE_ORDER: dict[str, tuple[int, int, int, int]] = {
    "ABCD": (0, 1, 2, 3),
    "CDAB": (2, 3, 0, 1),
    "BADC": (1, 0, 3, 2),
    "DCBA": (3, 2, 1, 0),
}
_STRUCT: dict[str, str] = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "float32": ">f",
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
}
WIDTH: dict[str, int] = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """One point of a register map, as the controller firmware lays it out."""

    key: str
    address: int
    type: ValueType
    order: Order = "ABCD"
    scale: float = 1.0

    @property
    def width(self) -> int:
        return WIDTH[self.type]


# The dry collector's monitoring controller: input registers (FC4), one block of 11.
# Must stay identical to config/profiles/dry_collector.toml (tests/contract checks it).
DRY_COLLECTOR_TABLE = "input"
DRY_COLLECTOR_MAP: tuple[RegisterPoint, ...] = (
    RegisterPoint("hopper_temp", 0, "float32", "ABCD"),
    RegisterPoint("diff_pressure", 2, "float32", "CDAB"),
    RegisterPoint("inlet_temp", 4, "int16", scale=0.1),
    RegisterPoint("outlet_temp", 5, "int16", scale=0.1),
    RegisterPoint("pulse_pressure", 6, "uint16", scale=0.001),
    RegisterPoint("fan_running", 7, "uint16"),
    RegisterPoint("airlock_state", 8, "uint16"),
    RegisterPoint("spark_count", 9, "uint32", "CDAB"),
)
DRY_COLLECTOR_REGISTERS = max(p.address + p.width for p in DRY_COLLECTOR_MAP)  # 11


def encode(value: float, type_: ValueType, order: Order = "ABCD", scale: float = 1.0) -> list[int]:
    """Engineering value -> registers as the device puts them on the wire.

    Integers are `round(value / scale)` clamped to the type's range (a real transmitter
    saturates, it does not wrap).
    """
    fmt = _STRUCT[type_]
    if type_ == "float32":
        raw = struct.pack(fmt, value / scale)
    else:
        lo, hi = _INT_RANGE[type_]
        raw = struct.pack(fmt, min(hi, max(lo, round(value / scale))))
    if len(raw) == 4:
        raw = bytes(raw[i] for i in _BYTE_ORDER[order])
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def decode(regs: list[int], type_: ValueType, order: Order = "ABCD", scale: float = 1.0) -> float:
    """Registers -> engineering value (the inverse of `encode`, for tests and tools)."""
    raw = b"".join(r.to_bytes(2, "big") for r in regs[: WIDTH[type_]])
    if len(raw) == 4:
        perm = _BYTE_ORDER[order]
        unpermuted = bytearray(4)
        for dst, src in enumerate(perm):
            unpermuted[src] = raw[dst]
        raw = bytes(unpermuted)
    (value,) = struct.unpack(_STRUCT[type_], raw)
    return float(value) * scale


# --- deterministic noise ---------------------------------------------------------------------


def _mix(*parts: int) -> int:
    """splitmix64 over the parts: a cheap, stable integer hash (not Python's salted hash)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h


def _uniform(*parts: int) -> float:
    """A deterministic number in [-1, 1)."""
    return (_mix(*parts) >> 11) * (2.0 / (1 << 53)) - 1.0


def value_noise(seed: int, unit: int, channel: int, t: float, step: float) -> float:
    """Smooth noise in [-1, 1]: random knots every `step` seconds, smoothstep in between."""
    x = t / step
    k = math.floor(x)
    f = x - k
    f = f * f * (3.0 - 2.0 * f)
    a = _uniform(seed, unit, channel, k)
    b = _uniform(seed, unit, channel, k + 1)
    return a + (b - a) * f


# --- the collector ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectorState:
    """Engineering values of one dry collector at one instant."""

    hopper_temp: float  # °C
    diff_pressure: float  # Pa
    inlet_temp: float  # °C
    outlet_temp: float  # °C
    pulse_pressure: float  # MPa
    fan_running: int  # 0/1
    airlock_state: int  # 0 stopped, 1 running, 2 fault
    spark_count: int  # cumulative

    def value(self, key: str) -> float:
        return float(getattr(self, key))


@dataclass(frozen=True, slots=True)
class Smoulder:
    """A hopper fire: the hopper temperature of `unit` climbs from `onset` (scenario seconds)
    at `rate` °C/s, then bends smoothly onto a plateau `rise` °C above its baseline."""

    unit: int = 1
    onset: float = 10.0
    rate: float = 1.0  # °C per scenario second: ~60x a real smoulder
    rise: float = 47.5  # plateau above the ~37.5 °C baseline: ~85 °C
    knee: float = 5.0  # °C below the plateau where the ramp starts to bend

    def excess(self, s: float) -> float:
        """Degrees above the baseline at scenario time `s`."""
        if s <= self.onset:
            return 0.0
        lin = self.rate * (s - self.onset)
        bend = self.rise - self.knee
        if lin <= bend:
            return lin
        # Same value and slope as the ramp at the knee, exponential approach to the plateau.
        return self.rise - self.knee * math.exp(-(lin - bend) / self.knee)

    def describe(self) -> str:
        return (
            f"smoulder: unit {self.unit} hopper +{self.rate:g} °C/s from t={self.onset:g} s "
            f"to ~{37.5 + self.rise:.0f} °C (~60x faster than a real smoulder)"
        )


# The Python scenarios of this model; every other scenario is a file (firmware-sim/scenarios/,
# served on the demo site by `dust-sim serve --scenario NAME`: firmware_sim.site_cli).
SCENARIOS: dict[str, Smoulder | None] = {
    "none": None,
    "smoulder": Smoulder(),
}
# The wet collector's controller (units 3 and 4): input registers, the same 11-register block.
# Must stay identical to config/profiles/wet_collector.toml (tests/contract checks it).
WET_COLLECTOR_MAP: tuple[RegisterPoint, ...] = (
    RegisterPoint("tank_level", 0, "float32", "ABCD"),
    RegisterPoint("recirc_flow", 2, "float32", "ABCD"),
    RegisterPoint("water_pressure", 4, "uint16", scale=0.001),
    RegisterPoint("hydrogen", 5, "uint16", scale=0.1),
    RegisterPoint("grinder_running", 6, "uint16"),
    RegisterPoint("pump_running", 7, "uint16"),
)


class Plant:
    """The simulated plant: deterministic given `seed`; query any unit at any time `t`."""

    def __init__(self, seed: int = 0, scenario: str = "none", speed: float = 1.0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.seed = seed
        self.scenario = scenario
        chosen = SCENARIOS[scenario]
        self.smoulder = chosen
        self.speed = speed

    def describe(self) -> str:
        chosen = self.smoulder
        if chosen is None:
            return "scenario none"
        text = f"scenario {chosen.describe()}"
        return text if self.speed == 1.0 else f"{text}, speed x{self.speed:g}"

    # Per-unit constants, all derived from (seed, unit).
    def pulse_period(self, unit: int) -> float:
        """Seconds between cleaning pulses: 20-30 s, fixed per unit."""
        return 20.0 + 10.0 * (_uniform(self.seed, unit, 1000) + 1.0) / 2.0

    def pulse_phase(self, unit: int) -> float:
        """Time of the first pulse: 5 s to one period after start."""
        return 5.0 + (self.pulse_period(unit) - 5.0) * (_uniform(self.seed, unit, 1001) + 1.0) / 2

    def pulse_times(self, unit: int, until: float) -> list[float]:
        """All cleaning pulses in [0, until]."""
        period, t = self.pulse_period(unit), self.pulse_phase(unit)
        out: list[float] = []
        while t <= until:
            out.append(t)
            t += period
        return out

    def collector(self, unit: int, t: float) -> CollectorState:
        seed = self.seed
        period = self.pulse_period(unit)
        since_pulse = (t - self.pulse_phase(unit)) % period  # 0 right at a pulse

        dp_low = 950.0 + 30.0 * _uniform(seed, unit, 1002)
        dp_high = 1250.0 + 30.0 * _uniform(seed, unit, 1003)
        diff_pressure = (
            dp_low
            + (dp_high - dp_low) * since_pulse / period
            + 6.0 * value_noise(seed, unit, 1, t, 1.0)
        )
        pulse_pressure = (
            0.62
            + 0.01 * _uniform(seed, unit, 1004)
            - 0.10 * math.exp(-since_pulse / 1.5)
            + 0.003 * value_noise(seed, unit, 2, t, 1.0)
        )
        inlet = 25.0 + 0.5 * _uniform(seed, unit, 1005) + 0.2 * value_noise(seed, unit, 3, t, 2.0)
        outlet = 27.0 + 0.5 * _uniform(seed, unit, 1006) + 0.2 * value_noise(seed, unit, 4, t, 2.0)
        hopper = (
            37.5
            + 1.0 * value_noise(seed, unit, 5, t, 30.0)
            + 0.15 * value_noise(seed, unit, 6, t, 1.0)
        )
        if self.smoulder is not None and unit == self.smoulder.unit:
            excess = self.smoulder.excess(t * self.speed)
            hopper += excess
            outlet += 0.08 * excess  # some of the heat reaches the clean-air side
        state = CollectorState(
            hopper_temp=hopper,
            diff_pressure=diff_pressure,
            inlet_temp=inlet,
            outlet_temp=outlet,
            pulse_pressure=pulse_pressure,
            fan_running=1,
            airlock_state=1,
            spark_count=0,
        )
        return state

    def collector_registers(self, unit: int, t: float) -> list[int]:
        """The controller's input-register block (addresses 0..10) at time `t`; units 3 and 4
        are wet collectors (WET_COLLECTOR_MAP), the others dry ones."""
        state: CollectorState | WetState
        if unit in WET_UNITS:
            state, table = self.wet(unit, t), WET_COLLECTOR_MAP
        else:
            state, table = self.collector(unit, t), DRY_COLLECTOR_MAP
        regs = [0] * DRY_COLLECTOR_REGISTERS
        for p in table:
            regs[p.address : p.address + p.width] = encode(
                state.value(p.key), p.type, p.order, p.scale
            )
        return regs

    def wet(self, unit: int, t: float) -> WetState:
        return wet_state(self.seed, unit, t, value_noise)

    def bench_registers(self, unit: int, t: float, count: int) -> list[int]:
        """`count` uint16 holding registers for the benchmark plant.

        Register 0 counts whole seconds (wraps at 65536); register k > 0 is a slow sine
        (period 60 s) around 10000 with a per-(unit, register) phase, so every register
        changes between 1 Hz polls. About 1 µs per register.
        """
        regs = [int(t) & 0xFFFF]
        w = 2.0 * math.pi / 60.0
        base = (unit * 7919) % 1000
        for k in range(1, count):
            regs.append(10000 + base + int(5000.0 * math.sin(w * t + 0.37 * k + 0.11 * unit)))
        return regs[:count]
