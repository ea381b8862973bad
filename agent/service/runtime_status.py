"""What `dust-agent status` shows about buses and devices, built from the frames the agent sees.

`DeviceTracker.observe(frame)` is O(points in the frame) in numpy; `buses()` aggregates per
device (ok / degraded / down / quarantined, last good read) only when a snapshot is written.
A reading counts as good when its quality has no bit other than CLOCK_UNSYNCED.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.core.model import AgentConfig, Frame, Quality
from agent.source.poller import BusPoller
from drivers.registry import driver

_BAD_MASK = np.uint8(0xFF & ~int(Quality.CLOCK_UNSYNCED))
_BUSY = np.uint8(Quality.BUSY)


def _ms(ts: float) -> int | None:
    return None if math.isnan(ts) else round(ts * 1000)


class DeviceTracker:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        n = len(cfg.points)
        self.last_good = np.full(n, np.nan)  # wall ts of the last good reading per point
        self.last_seen = np.full(n, np.nan)  # wall ts of the last reading, good or not
        self.last_bad = np.zeros(n, dtype=bool)
        self.last_busy = np.zeros(n, dtype=bool)  # the last reading had Quality.BUSY
        self.devices: dict[str, list[tuple[str, int, npt.NDArray[np.intp]]]] = {}
        by_dev: dict[tuple[str, str, int], list[int]] = {}
        for p in cfg.points:
            by_dev.setdefault((p.bus, p.device, p.unit_id), []).append(p.index)
        for (bus, dev, unit), idx in by_dev.items():
            self.devices.setdefault(bus, []).append((dev, unit, np.asarray(idx, dtype=np.intp)))

    def observe(self, frame: Frame) -> None:
        idx = frame.index
        bad = (frame.quality & _BAD_MASK) != 0
        self.last_seen[idx] = frame.ts
        self.last_bad[idx] = bad
        self.last_busy[idx] = (frame.quality & _BUSY) != 0
        good = idx[~bad]
        self.last_good[good] = frame.ts[~bad]

    def buses(self, pollers: Sequence[BusPoller]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        by_name = {p.plan.bus.name: p for p in pollers}
        for bus in self.cfg.buses:
            poller = by_name.get(bus.name)
            units = [unit for _, unit, _ in self.devices.get(bus.name, [])]
            quarantined = _quarantined_units(poller, units)
            devices = []
            for name, unit, idx in self.devices.get(bus.name, []):
                seen = not np.isnan(self.last_seen[idx]).all()
                ok = seen and not self.last_bad[idx].all()
                state = "quarantined" if unit in quarantined else ("ok" if ok else "down")
                busy = int(self.last_busy[idx].sum()) if seen else 0
                if state != "quarantined" and (
                    busy or (poller is not None and poller.health.degraded(unit))
                ):
                    state = "degraded"  # a request stayed busy (exception 5/6) last cycle
                if not seen:
                    state = "unknown"
                lg = self.last_good[idx]
                devices.append(
                    {
                        "name": name,
                        "unit": unit,
                        "state": state,
                        "points": int(idx.shape[0]),
                        "bad_points": int(self.last_bad[idx].sum()) if seen else 0,
                        "busy_points": busy,
                        "last_good": None if np.isnan(lg).all() else _ms(float(np.nanmax(lg))),
                    }
                )
            entry: dict[str, Any] = {
                "name": bus.name,
                "type": bus.type,
                # an RTU line's serial port; a TCP endpoint's host:port
                "target": bus.serial_port or f"{bus.host}:{bus.port}",
                "endpoint": driver(bus.type).endpoint(bus),
                "poll_interval": bus.poll_interval,
                "devices": devices,
            }
            if poller is not None:
                s = poller.stats
                entry.update(
                    connected=bool(poller.source.connected),
                    cycles=s.cycles,
                    overruns=s.overruns,
                    timeouts=s.timeouts,
                    reconnects=s.reconnects,
                    busy_replies=s.busy_replies,
                    busy_failures=s.busy_failures,
                    device_failures=s.device_failures,
                )
            out.append(entry)
        return out


def _quarantined_units(poller: BusPoller | None, units: Sequence[int] = ()) -> set[int]:
    """Units the poller has quarantined (agent.source.quarantine, `poller.health.quarantined`)."""
    health = getattr(poller, "health", None)
    check = getattr(health, "quarantined", None)
    if check is None:
        return set()
    return {u for u in units if check(u)}
