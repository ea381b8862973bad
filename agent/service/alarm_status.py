"""The active alarms as `status.json` shows them: comm_loss too, and each alarm with the
quantity its rule measures (degC/min for a rate, events per window for a count, seconds for
stale) and its threshold in that unit, beside the point's latest reading in its own unit."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from agent.core.model import AlarmEvent
from agent.rules import RuleEngine


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def _ms(ts: float) -> int | None:
    return None if math.isnan(ts) else round(ts * 1000)


def rule_alarm_status(engine: RuleEngine) -> list[dict[str, Any]]:
    """The engine's active alarms, in point order."""
    return [
        {
            "alarm_id": a.alarm_id,
            "kind": a.kind,
            "point": a.point,
            "device": a.device,
            "key": a.key,
            "direction": a.direction,
            "level": a.level,
            "since": _ms(a.since),
            "value": _num(a.value),  # the measure at the last transition, in `unit`
            "threshold": _num(a.threshold),
            "unit": a.unit,
            "reading": _num(a.reading),  # the point's latest reading, in `reading_unit`
            "reading_unit": a.reading_unit,
            "acked": a.acked,
        }
        for a in engine.active()
    ]


def comm_loss_status(
    active: Iterable[AlarmEvent], now: float | None = None
) -> list[dict[str, Any]]:
    """The raised comm_loss alarms: the measure is the seconds without an answer."""
    t = time.time() if now is None else now
    return [
        {
            "alarm_id": ev.alarm_id,
            "kind": ev.kind,
            "point": ev.point,
            "device": ev.device,
            "key": ev.key,
            "direction": ev.direction,
            "level": ev.level,
            "since": _ms(ev.ts),
            "value": round(max(0.0, t - ev.ts), 1),
            "threshold": None,
            "unit": "s without an answer",
            "reading": None,
            "reading_unit": "",
            "acked": False,
            "text_en": ev.text_en,
        }
        for ev in sorted(active, key=lambda e: e.alarm_id)
    ]
