"""Drivers by bus type: a driver registers one DriverEntry (drivers.base) under the bus
`type` the config names; `make_source(bus)` builds the Source of a validated bus.

Adding a driver (docs/extending.md): its module, with its DriverEntry, and one
`register(...)` line below. The config loader checks bus types and address keys through
`driver(type)`, `dust-agent check` estimates cycle times through it, and the supervisor
builds every bus's Source with `make_source`.
"""

from __future__ import annotations

import difflib

from drivers import modbus
from drivers.base import BusSettings, DriverEntry, Source

_DRIVERS: dict[str, DriverEntry] = {}


def register(entry: DriverEntry) -> DriverEntry:
    """Add a driver under its bus type; the type must be new."""
    if entry.name in _DRIVERS:
        raise ValueError(f"a driver for bus type {entry.name!r} is already registered")
    _DRIVERS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a driver (tests)."""
    del _DRIVERS[name]


def names() -> tuple[str, ...]:
    """The registered bus types, in registration order."""
    return tuple(_DRIVERS)


def driver(bus_type: str) -> DriverEntry:
    """The driver of a bus type; KeyError with the known types (and a close match) if none."""
    try:
        return _DRIVERS[bus_type]
    except KeyError:
        hint = difflib.get_close_matches(bus_type, list(_DRIVERS), n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        known = ", ".join(_DRIVERS)
        msg = f"no driver for bus type '{bus_type}'{advice}; expected one of: {known}"
        raise KeyError(msg) from None  # str() of a KeyError quotes it: callers show args[0]


def make_source(bus: BusSettings) -> Source:
    try:
        entry = driver(bus.type)
    except KeyError as exc:
        raise ValueError(f"bus {bus.name!r}: {exc.args[0]}") from None
    return entry.make(bus)


register(modbus.TCP)
register(modbus.RTU)
register(modbus.RTU_TCP)
