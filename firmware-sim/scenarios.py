"""Scenarios beyond the smoulder, and the wet collector 湿式除尘器 (units 3 and 4).

Each scenario changes one unit from `onset` (scenario seconds: plant time x speed), as a pure
function of (unit, s) like the rest of the plant model. They run much faster than the real
processes so that tests and demos see them within seconds; each docstring says how much.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

WET_UNITS = (3, 4)  # unit ids served as wet collectors (the others are dry collectors)
SPARK_BASE = 2**32 - 2  # the spark scenario's counter starts 2 below its wrap

_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class WetState:
    """Engineering values of one wet collector at one instant."""

    tank_level: float  # m
    recirc_flow: float  # m³/h (design 10)
    water_pressure: float  # MPa
    hydrogen: float  # %LEL
    grinder_running: int  # 0/1: the grinders it serves
    pump_running: int  # 0/1

    def value(self, key: str) -> float:
        return float(getattr(self, key))


@dataclass(frozen=True, slots=True)
class Effect:
    """A scenario: `apply` returns the unit's state changed at scenario time `s`."""

    name: str = ""
    unit: int = 1
    onset: float = 10.0

    def apply(self, unit: int, s: float, state: _S) -> _S:
        if unit != self.unit or s <= self.onset:
            return state
        return dataclasses.replace(state, **self.change(s - self.onset, state))  # type: ignore[type-var]

    def change(self, d: float, state: Any) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: unit {self.unit} from t={self.onset:g} s"


@dataclass(frozen=True, slots=True)
class FilterBlinding(Effect):
    """The filter cake stops cleaning off: ΔP climbs 40 Pa/s (a real blinding takes days) and
    the cleaning-pulse sawtooth fades out."""

    rate: float = 40.0

    def change(self, d: float, state: Any) -> dict[str, Any]:
        mean = 1100.0
        fade = math.exp(-d / 20.0)
        return {"diff_pressure": mean + (state.diff_pressure - mean) * fade + self.rate * d}


@dataclass(frozen=True, slots=True)
class BrokenBag(Effect):
    """Bags tear: ΔP falls to 35 % of normal within 2 s while the fan keeps running."""

    def change(self, d: float, state: Any) -> dict[str, Any]:
        k = 1.0 - 0.65 * min(d / 2.0, 1.0)
        return {"diff_pressure": state.diff_pressure * k}


@dataclass(frozen=True, slots=True)
class SparkBurst(Effect):
    """Embers: one spark per second for 4 s; the counter starts 2 below its 32-bit wrap."""

    def change(self, d: float, state: Any) -> dict[str, Any]:
        return {"spark_count": (SPARK_BASE + min(int(d) + 1, 4)) % 2**32}

    def apply(self, unit: int, s: float, state: _S) -> _S:
        if unit != self.unit:
            return state
        if s <= self.onset:
            return dataclasses.replace(state, spark_count=SPARK_BASE)  # type: ignore[type-var]
        return Effect.apply(self, unit, s, state)


@dataclass(frozen=True, slots=True)
class AirlockStopped(Effect):
    """The rotary discharge valve stops (state 0) while the fan keeps running."""

    def change(self, d: float, state: Any) -> dict[str, Any]:
        return {"airlock_state": 0}


@dataclass(frozen=True, slots=True)
class FanOff(Effect):
    """The collector is shut down: fan stops, ΔP decays to ~20 Pa, the air-lock stops.
    Nothing here is an alarm: the low-ΔP and air-lock rules count only while the fan runs."""

    def change(self, d: float, state: Any) -> dict[str, Any]:
        dp = 20.0 + (state.diff_pressure - 20.0) * math.exp(-d / 1.5)
        return {"fan_running": 0, "airlock_state": 0, "diff_pressure": dp}


@dataclass(frozen=True, slots=True)
class WetLowFlow(Effect):
    """The recirculation flow of wet collector `unit` falls to 70 % of design (10 m³/h) while
    the grinders run."""

    unit: int = 3

    def change(self, d: float, state: Any) -> dict[str, Any]:
        return {"recirc_flow": state.recirc_flow - 3.0 * min(d / 2.0, 1.0)}


@dataclass(frozen=True, slots=True)
class HydrogenRising(Effect):
    """Hydrogen in wet collector `unit` rises ~3 %LEL/s at first (hundreds of times a real
    build-up), passing 25 %LEL at ~9 s and 50 %LEL at ~35 s, towards ~60 %LEL."""

    unit: int = 3

    def change(self, d: float, state: Any) -> dict[str, Any]:
        return {"hydrogen": state.hydrogen + 58.0 * (1.0 - math.exp(-d / 20.0))}


EFFECTS: dict[str, Effect] = {
    "filter_blinding": FilterBlinding("filter_blinding"),
    "broken_bag": BrokenBag("broken_bag"),
    "spark_burst": SparkBurst("spark_burst"),
    "airlock_stopped": AirlockStopped("airlock_stopped"),
    "fan_off": FanOff("fan_off"),
    "wet_low_flow": WetLowFlow("wet_low_flow"),
    "hydrogen_rising": HydrogenRising("hydrogen_rising"),
}


def wet_state(seed: int, unit: int, t: float, noise: Any) -> WetState:
    """A wet collector running normally: level ~1.2 m, flow ~10 m³/h, 0.25 MPa, ~2 %LEL."""
    return WetState(
        tank_level=1.2 + 0.01 * noise(seed, unit, 11, t, 5.0),
        recirc_flow=10.0 + 0.1 * noise(seed, unit, 12, t, 2.0),
        water_pressure=0.25 + 0.003 * noise(seed, unit, 13, t, 2.0),
        hydrogen=2.0 + 0.3 * noise(seed, unit, 14, t, 10.0),
        grinder_running=1,
        pump_running=1,
    )
