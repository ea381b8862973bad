"""The wet collector 湿式除尘器 of the demo plant (units 3 and 4 of `dust-sim serve`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WET_UNITS = (3, 4)  # unit ids served as wet collectors (the others are dry collectors)


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
