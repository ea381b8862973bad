"""Per-device health on one bus: quarantine of dead units so the healthy ones keep their cycle.

A unit that fails `after` requests in a row (no answer or no valid reply, each after the
bus's retries) is quarantined: the poller skips it, except for one probe request on a growing
interval (`first`, doubling, capped at `cap`). Any answer (data or a Modbus exception: the
device is alive) ends the quarantine. A unit whose request stayed busy (exception 5/6)
through the cycle's retries is "degraded" until a cycle in which none did. Pure state, no
I/O and no clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Change = Literal["lost", "restored"]


@dataclass(slots=True)
class _Unit:
    failures: int = 0
    quarantined: bool = False
    interval: float = 0.0
    next_probe: float = 0.0
    degraded: bool = False


class DeviceHealth:
    def __init__(self, after: int, first: float, cap: float) -> None:
        if after < 1 or not 0 < first <= cap:
            raise ValueError("need after >= 1 and 0 < first <= cap")
        self.after, self.first, self.cap = after, first, cap
        self._units: dict[int, _Unit] = {}

    def _u(self, unit: int) -> _Unit:
        return self._units.setdefault(unit, _Unit())

    def quarantined(self, unit: int) -> bool:
        return self._u(unit).quarantined

    def skip(self, unit: int, now: float) -> bool:
        """True while `unit` is quarantined and its next probe is not due."""
        u = self._u(unit)
        return u.quarantined and now < u.next_probe

    def answered(self, unit: int) -> Change | None:
        u = self._u(unit)
        u.failures = 0
        if u.quarantined:
            u.quarantined = False
            return "restored"
        return None

    def failed(self, unit: int, now: float) -> Change | None:
        u = self._u(unit)
        u.failures += 1
        if u.quarantined:
            u.interval = min(self.cap, u.interval * 2)
            u.next_probe = now + u.interval
            return None
        if u.failures >= self.after:
            u.quarantined = True
            u.interval = self.first
            u.next_probe = now + u.interval
            return "lost"
        return None

    def note_busy(self, unit: int, busy: bool) -> None:
        """After a cycle that polled `unit`: whether a request of it stayed busy."""
        self._u(unit).degraded = busy

    def degraded(self, unit: int) -> bool:
        return self._u(unit).degraded

    def probe_all_now(self, now: float) -> None:
        """After the line came back: probe every quarantined unit in the next cycle."""
        for u in self._units.values():
            if u.quarantined:
                u.next_probe = now

    @property
    def quarantined_units(self) -> list[int]:
        return sorted(k for k, u in self._units.items() if u.quarantined)
