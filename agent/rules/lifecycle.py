"""Alarm lifecycle above the detectors: latching, acknowledgement, shelving with an expiry,
chattering flags, and the snapshot that survives a restart.

Per alarm (alarm_id) it keeps the level last published, the level the detectors compute
(`computed`), the peak held by a latch, and operator state. Only alarms that are not normal,
are shelved, or flipped recently have an entry: bounded by the number of alarm slots.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

CHATTER_WINDOW = 60.0  # seconds


@dataclass
class AlarmState:
    published: int = 0  # level last sent upstream
    computed: int = 0  # level of the detectors
    held: int = 0  # latched peak (0 when not latching or acknowledged)
    acked: bool = False
    since: float = math.nan  # ts of the step out of normal
    shelved_until: float | None = None
    flips: deque[float] = field(default_factory=deque)
    # what the rule measured at the last transition, in its own unit (rate: degC/min, count:
    # per window, stale: s), and the threshold of that transition
    value: float = math.nan
    threshold: float = math.nan
    unit: str | None = None

    def effective(self) -> int:
        return max(self.computed, self.held)

    def idle(self) -> bool:
        return self.published == 0 and self.effective() == 0 and self.shelved_until is None

    def disposable(self) -> bool:
        """Idle and no transition to remember for the chattering count."""
        return self.idle() and not self.flips

    def to_json(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "computed": self.computed,
            "held": self.held,
            "acked": self.acked,
            "since": None if math.isnan(self.since) else self.since,
            "shelved_until": self.shelved_until,
            "value": None if math.isnan(self.value) else self.value,
            "threshold": None if math.isnan(self.threshold) else self.threshold,
            "unit": self.unit,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AlarmState:
        since = d.get("since")
        until = d.get("shelved_until")
        return cls(
            published=int(d.get("published", 0)),
            computed=int(d.get("computed", 0)),
            held=int(d.get("held", 0)),
            acked=bool(d.get("acked", False)),
            since=math.nan if since is None else float(since),
            shelved_until=None if until is None else float(until),
            value=_num(d.get("value")),
            threshold=_num(d.get("threshold")),
            unit=d.get("unit") if isinstance(d.get("unit"), str) else None,
        )


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def chattering(st: AlarmState, ts: float, limit: int) -> bool:
    """Record a published transition at `ts`; True when `limit` (> 0) or more fell within
    the last minute. Nothing is recorded when the check is off (limit 0)."""
    if limit <= 0:
        return False
    st.flips.append(ts)
    while st.flips and st.flips[0] < ts - CHATTER_WINDOW:
        st.flips.popleft()
    while len(st.flips) > limit * 2:
        st.flips.popleft()
    return len(st.flips) >= limit
