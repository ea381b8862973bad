"""The built-in rule kinds, registered in the order the engine evaluates them (an event of an
earlier kind comes first within a frame). A new kind adds one `register(...)` line here, or in
its own module that the agent imports (docs/extending.md)."""

from __future__ import annotations

from agent.core.model import PointSpec
from agent.rules.quality import Quality
from agent.rules.registry import KindEntry, register
from agent.rules.state import State
from agent.rules.threshold import Difference, Threshold
from agent.rules.trend import Deviation, Rate
from agent.rules.window import Count, Drop


def _threshold(p: PointSpec) -> bool:
    return p.rule is not None and p.rule.enabled


def _difference(p: PointSpec) -> bool:
    r = p.rules
    return r.minus is not None and (r.diff_warning is not None or r.diff_alarm is not None)


def _rate(p: PointSpec) -> bool:
    return p.rules.rate_warning is not None or p.rules.rate_alarm is not None


def _deviation(p: PointSpec) -> bool:
    return p.rules.deviation_warning is not None or p.rules.deviation_alarm is not None


def _drop(p: PointSpec) -> bool:
    return p.rules.drop_warning is not None or p.rules.drop_alarm is not None


def _count(p: PointSpec) -> bool:
    return p.rules.count_warning is not None or p.rules.count_alarm is not None


def _state(p: PointSpec) -> bool:
    r = p.rules
    idle = bool(r.idle_states) and r.when is not None
    return bool(r.state_warning or r.state_alarm or r.state_critical) or idle


def _quality(p: PointSpec) -> bool:
    r = p.rules
    return (
        r.stale_after is not None
        or r.frozen_polls is not None
        or r.range_min is not None
        or r.range_max is not None
    )


_LEVELS = ("hysteresis_pct", "on_delay", "off_delay", "when", "when_min_level")
_THRESHOLD = ("high_alarm", "high_warning", "low_warning", "low_alarm", "reference")
_PCT = ("high_alarm_pct", "high_warning_pct", "low_warning_pct", "low_alarm_pct")
_RATE = ("rate_warning", "rate_alarm", "rate_window", "rate_per", "rate_relative", "rate_hold")
_DEVIATION = ("deviation_warning", "deviation_alarm", "baseline_tau", "deviation_absolute")
_QUALITY = ("stale_polls", "frozen_polls", "range_min", "range_max", "loop_ma")
_COUNT = ("count_warning", "count_alarm", "count_window", "count_bits")
_STATE = ("state_warning", "state_alarm", "state_critical", "state_delay")

register(KindEntry("threshold", Threshold, (*_THRESHOLD, *_PCT, *_LEVELS), _threshold))
register(KindEntry("difference", Difference, ("minus", "diff_warning", "diff_alarm"), _difference))
register(KindEntry("rate", Rate, (*_RATE, "when"), _rate))
register(KindEntry("deviation", Deviation, (*_DEVIATION, "deviation_hold", "when"), _deviation))
register(KindEntry("drop", Drop, ("drop_warning", "drop_alarm", "drop_window", "when"), _drop))
register(
    KindEntry(
        "count", Count, ("count_warning", "count_alarm", "count_window", "count_bits"), _count
    )
)
register(KindEntry("state", State, (*_STATE, "idle_states", "idle_delay", "when"), _state))
register(KindEntry("quality", Quality, _QUALITY, _quality))
