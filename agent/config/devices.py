"""Device-level checks: unit ids by bus type, names and unit ids used twice, override values."""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from msgspec import UNSET

from agent.config.errors import ConfigError
from agent.config.schema import RawBus, RawConfig, RawDevice
from drivers.registry import driver


def check_device(dev: RawDevice, i: int, buses: list[RawBus], cfg_file: Path) -> None:
    """The device's bus exists and its unit id suits the bus type (the driver's range)."""
    bus_names = [b.name for b in buses]
    bus = next((b for b in buses if b.name == dev.bus), None)
    if bus is None:
        hint = difflib.get_close_matches(dev.bus, bus_names, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            cfg_file,
            f"devices[{i}].bus",
            f"no bus named '{dev.bus}'{advice}; buses: {', '.join(bus_names)}",
        )
    entry = driver(bus.type)  # the bus type was checked with the buses
    lo, hi = entry.unit_ids
    if not lo <= dev.unit <= hi:
        raise ConfigError(
            cfg_file,
            f"devices[{i}].unit",
            f"unit id {dev.unit} is outside {lo}..{hi} on bus '{bus.name}' (type "
            f"{bus.type}): {entry.unit_note or f'use {lo}..{hi}'}",
        )
    check_overrides(dev, i, cfg_file)


def check_overrides(dev: RawDevice, i: int, cfg_file: Path) -> None:
    """An override's scale is finite and not 0 (as on a point); its offset is finite."""
    for key, ov in dev.override.items():
        at = f"devices[{i}].override.{key}"
        if ov.scale is not UNSET and ov.scale == 0:
            raise ConfigError(
                cfg_file,
                f"{at}.scale",
                "scale must not be 0 (every reading would be 0 and its alarms could never "
                "raise); leave it out to keep the profile's scale",
            )
        for name in ("scale", "offset"):
            v = getattr(ov, name)
            if v is not UNSET and not math.isfinite(v):
                raise ConfigError(cfg_file, f"{at}.{name}", f"{name} must be a finite number")


def check_names(raw: RawConfig, cfg_file: Path) -> None:
    """Device names are unique: a name used twice names both key paths."""
    first: dict[str, int] = {}
    for i, dev in enumerate(raw.devices):
        if dev.name in first:
            raise ConfigError(
                cfg_file,
                f"devices[{i}].name",
                f"device name '{dev.name}' is used twice: here and at "
                f"devices[{first[dev.name]}].name; give each device its own name",
            )
        first[dev.name] = i


def shared_unit_warnings(raw: RawConfig, cfg_file: Path) -> list[str]:
    """Two devices with one unit id on one bus: a warning naming both key paths (their points
    overlapping is an error, from the overlap check)."""
    seen: dict[tuple[str, int], int] = {}
    out: list[str] = []
    for i, dev in enumerate(raw.devices):
        j = seen.setdefault((dev.bus, dev.unit), i)
        if j != i:
            out.append(
                f"{cfg_file}: devices[{i}].unit: device '{dev.name}' has unit id {dev.unit} "
                f"like device '{raw.devices[j].name}' (devices[{j}].unit) on bus '{dev.bus}': "
                "two devices on one bus answer to different unit ids; set the address on the "
                "device's panel and here (fine only if both entries are one device)"
            )
    return out
