"""Vectorized threshold alarms: two levels per direction, hysteresis and on/off delays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.model import AlarmEvent, Direction, Frame, Level, PointSpec, Transition

# Detector rows in every (4, N) state array. A direction's level is derived from its pair:
# alarm detector on -> 2, else warning detector on -> 1, else 0.
HIGH_WARNING, HIGH_ALARM, LOW_WARNING, LOW_ALARM = range(4)
DIRECTIONS: tuple[Direction, Direction] = ("high", "low")
LEVELS: tuple[Level | None, Level, Level] = (None, "warning", "alarm")

_SIGN = np.array([1.0, 1.0, -1.0, -1.0])[:, None]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """A (point, direction) whose level is not normal."""

    alarm_id: str
    point: str  # platform point code
    device: str
    key: str
    direction: Direction
    level: Level
    since: float  # source ts of the raise (the step out of normal)
    value: float  # latest reading of the point (NaN if that reading was bad)
    threshold: float  # threshold of the current level
    unit: str


def band_limit(threshold: float, hysteresis_pct: float, direction: Direction) -> float:
    """The value a reading must get back to (inclusive) before an active level may clear."""
    band = abs(threshold) * hysteresis_pct / 100.0
    return threshold - band if direction == "high" else threshold + band


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


def rule_thresholds(spec: PointSpec) -> tuple[float, float, float, float]:
    """Thresholds of a point in detector-row order; NaN where disabled."""
    r = spec.rule
    if r is None:
        return (math.nan, math.nan, math.nan, math.nan)
    return (
        _nan_if_none(r.high_warning),
        _nan_if_none(r.high_alarm),
        _nan_if_none(r.low_warning),
        _nan_if_none(r.low_alarm),
    )


def transition_of(prev: int, new: int) -> Transition:
    if new == 0:
        return "clear"
    if prev == 0:
        return "raise"
    return "escalate" if new > prev else "deescalate"


def _num(v: float) -> str:
    """Readable in a text: 63.15, 0.395, 1502 (the exact value is in the event's fields)."""
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _q(v: float, unit: str) -> str:
    return f"{_num(v)} {unit}" if unit else _num(v)


def make_event(
    spec: PointSpec,
    direction: Direction,
    prev: int,
    new: int,
    *,
    value: float,
    threshold: float,
    ts: float,
) -> AlarmEvent:
    """Build the event (with zh/en texts) for one level change of one (point, direction)."""
    transition = transition_of(prev, new)
    v, t = _q(value, spec.unit), _q(threshold, spec.unit)
    zh_head, en_head = f"{spec.device} {spec.name_zh}", f"{spec.device} {spec.name_en}"
    beyond, inside = ("≥", "≤") if direction == "high" else ("≤", "≥")
    if transition in ("raise", "escalate"):
        zh_word, en_word = ("报警", "ALARM") if new == 2 else ("预警", "warning")
        text_zh = f"{zh_head} {zh_word}：{v} {beyond} {t}"
        text_en = f"{en_head} {en_word}: {v} {beyond} {t} ({direction})"
    elif transition == "deescalate":
        text_zh = f"{zh_head} 报警降为预警：{v}（预警限 {t}）"
        text_en = f"{en_head} ALARM eased to warning: {v} (warning limit {t}, {direction})"
    else:
        zh_word, en_word = ("报警", "ALARM") if prev == 2 else ("预警", "warning")
        text_zh = f"{zh_head} {zh_word}消除：{v} {inside} {t}"
        text_en = f"{en_head} {en_word} cleared: {v} {inside} {t} ({direction})"
    return AlarmEvent(
        alarm_id=f"{spec.code}:{direction}",
        point=spec.code,
        device=spec.device,
        key=spec.key,
        direction=direction,
        transition=transition,
        level=LEVELS[new],
        prev_level=LEVELS[prev],
        value=float(value),
        threshold=float(threshold),
        unit=spec.unit,
        ts=float(ts),
        text_zh=text_zh,
        text_en=text_en,
    )


class RuleEngine:
    """Threshold alarm state for all points, advanced one frame (one bus) at a time.

    Per point and direction, two time-debounced detectors (warning, alarm). A detector turns
    on when the reading is at/beyond its threshold continuously for `on_delay` seconds and off
    when it is back inside by the hysteresis band continuously for `off_delay` seconds. Time
    is each reading's source ts. A NaN reading meets neither condition: pending timers
    restart and active detectors stay on. A ts earlier than a pending timer's start (a
    wall-clock step back) restarts that timer, so a clock jump never fires early or stalls.

    All four detectors of all points share one vectorized update. `step` is not thread-safe.
    """

    def __init__(self, points: Sequence[PointSpec]) -> None:
        n = max((p.index for p in points), default=-1) + 1
        self._specs: list[PointSpec | None] = [None] * n
        thr = np.full((4, n), np.nan)
        on_delay, off_delay, hyst = np.zeros(n), np.zeros(n), np.zeros(n)
        for p in points:
            self._specs[p.index] = p
            thr[:, p.index] = rule_thresholds(p)
            if p.rule is not None:
                on_delay[p.index] = p.rule.on_delay
                off_delay[p.index] = p.rule.off_delay
                hyst[p.index] = p.rule.hysteresis_pct
        band = np.abs(thr) * hyst / 100.0
        self._thr = thr
        # Signed space (s = +1 high, -1 low): the on-test is s*x >= on, the off-test
        # s*x <= off, i.e. -s*x >= -off. Negation is exact, so each detector's current test is
        # one comparison `gain * x >= level` with gain = +-1, swapped when the detector fires.
        self._on = _SIGN * thr
        self._off = np.empty_like(thr)
        self._off[:2] = thr[:2] - band[:2]
        self._off[2:] = -(thr[2:] + band[2:])
        self._on_delay = np.broadcast_to(on_delay, (4, n)).copy()
        self._off_delay = np.broadcast_to(off_delay, (4, n)).copy()
        self._active = np.zeros((4, n), dtype=bool)
        self._gain = np.broadcast_to(_SIGN, (4, n)).copy()
        self._level_thr = self._on.copy()
        self._delay = self._on_delay.copy()
        self._since = np.full((4, n), np.nan)  # start of the pending condition, NaN if none
        self._level = np.zeros((2, n), dtype=np.int8)  # per direction: 0, 1, 2
        self._raised = np.full((2, n), np.nan)  # ts of the step out of normal
        self._value = np.full(n, np.nan)  # latest reading

    def __len__(self) -> int:
        return len(self._specs)

    def step(self, frame: Frame) -> list[AlarmEvent]:
        """Advance the points in `frame` (unique indices); return their level changes."""
        idx, x, t = frame.index, frame.value, frame.ts
        k = idx.shape[0]
        if k == 0:
            return []
        self._value[idx] = x
        # A bus's points are usually one contiguous index range: then use views, not gathers.
        lo = int(idx[0])
        cols: slice | None = None
        if int(idx[-1]) - lo == k - 1 and (k == 1 or bool((np.diff(idx) == 1).all())):
            cols = slice(lo, lo + k)
            gain, level, delay = self._gain[:, cols], self._level_thr[:, cols], self._delay[:, cols]
            since = self._since[:, cols]
        else:
            gain, level = self._gain.take(idx, axis=1), self._level_thr.take(idx, axis=1)
            delay, since = self._delay.take(idx, axis=1), self._since.take(idx, axis=1)
        cond = gain * x >= level  # False for NaN
        restart = cond & ~(since <= t)  # no pending timer (NaN) or the clock went back
        # Entries whose timer changes; the gathered path writes back only these (rare).
        touched = None if cols is not None else restart | (~cond & (~np.isnan(since)))
        # In place: `since` is a gathered copy or, on the contiguous path, a view of the state.
        np.copyto(since, np.nan, where=~cond)
        np.copyto(since, t, where=restart)
        fire = cond & (t - since >= delay)
        any_fired = bool(fire.any())
        if any_fired:
            since[fire] = np.nan
        if touched is not None:
            touched |= fire
            if touched.any():
                r, j = np.nonzero(touched)
                self._since[r, idx[j]] = since[r, j]
        return self._fire(idx, x, t, fire) if any_fired else []

    def _fire(
        self, idx: npt.NDArray[np.intp], x: FloatArray, t: FloatArray, fire: BoolArray
    ) -> list[AlarmEvent]:
        """Toggle the fired detectors, swap their tests, and report level changes."""
        rows, js = np.nonzero(fire)
        cols = idx[js]
        now_on = ~self._active[rows, cols]
        self._active[rows, cols] = now_on
        self._gain[rows, cols] = np.where(now_on, -_SIGN[rows, 0], _SIGN[rows, 0])
        self._level_thr[rows, cols] = np.where(now_on, -self._off[rows, cols], self._on[rows, cols])
        self._delay[rows, cols] = np.where(
            now_on, self._off_delay[rows, cols], self._on_delay[rows, cols]
        )
        active = self._active.take(idx, axis=1)
        new = np.maximum(active[0::2].astype(np.int8), active[1::2].astype(np.int8) * 2)
        prev = self._level.take(idx, axis=1)
        changed = new != prev
        if not changed.any():
            return []
        self._level[:, idx] = new
        events: list[AlarmEvent] = []
        # Transposed so events come in frame order, high before low within a point.
        for j, d in zip(*np.nonzero(changed.T), strict=True):
            i, di = int(idx[j]), int(d)
            spec = self._specs[i]
            assert spec is not None, f"frame carries unknown point index {i}"
            p, n = int(prev[di, j]), int(new[di, j])
            row = 2 * di + (p if n == 0 else n) - 1  # a clear reports the level that cleared
            if p == 0:
                self._raised[di, i] = t[j]
            thr = float(self._thr[row, i])
            events.append(
                make_event(
                    spec, DIRECTIONS[di], p, n, value=float(x[j]), threshold=thr, ts=float(t[j])
                )
            )
        return events

    def active(self) -> list[ActiveAlarm]:
        """Every (point, direction) not at normal, in point order, high before low."""
        out: list[ActiveAlarm] = []
        for ii, dd in zip(*np.nonzero(self._level.T), strict=True):
            i, d = int(ii), int(dd)
            spec = self._specs[i]
            assert spec is not None
            lvl = int(self._level[d, i])
            direction = DIRECTIONS[d]
            level = LEVELS[lvl]
            assert level is not None
            out.append(
                ActiveAlarm(
                    alarm_id=f"{spec.code}:{direction}",
                    point=spec.code,
                    device=spec.device,
                    key=spec.key,
                    direction=direction,
                    level=level,
                    since=float(self._raised[d, i]),
                    value=float(self._value[i]),
                    threshold=float(self._thr[2 * d + lvl - 1, i]),
                    unit=spec.unit,
                )
            )
        return out
