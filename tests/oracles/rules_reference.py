"""The alarm rules of DOMAIN.md and docs/config.md "Rules", one point at a time in plain Python.

A test oracle for agent.rules.RuleEngine (tests/unit/test_rules.py, test_rule_kinds.py) and the
per-point loop bench/rules.py times it against. It shares no code and no constants with the
engine: it reads a point's settings from the core types (ThresholdRule, PointRules) and
implements what the documents say they mean, in the most direct form rather than the fastest:

- every alarm is a debounced detector: its raise condition must hold for the on-delay, its
  clear condition for the off-delay, continuously (a missing reading breaks "continuously",
  and neither raises nor clears); a timestamp earlier than the start of a pending wait (the
  clock stepped back) starts the wait again. Defaults when a point has no threshold rule:
  DOMAIN.md's 30 s on, 60 s off, 2 % hysteresis;
- a rule gated by `when` counts only while the gate point's latest reading is on (>= 0.5):
  while it is off the condition is normal (an active level clears after its off-delay), while
  it is unknown (NaN) nothing changes;
- a rate is the ordinary weighted least-squares slope over every reading since the fit began,
  weights exp(-age / rate_window), trusted from 3 readings spanning a quarter of the window;
  a clock step back begins a new fit. It clears under half its threshold;
- a deviation compares the reading with an exponentially weighted baseline of the earlier
  readings, y += (1 - exp(-dt / tau)) (x - y); percent of a zero baseline is ±infinite (or
  undefined when the reading is zero too). It clears under half its threshold;
- windows (drop, count) are "resolved to 1/10": the window is the 10 sub-windows of width
  window / 10 (counted from the epoch) ending with the current one; a clock step back (a
  reading stamped in an earlier sub-window than the one before it) empties it;
- a 4-20 mA loop faults below 3.6 or above 21 mA and is healthy again inside NAMUR NE43's
  measurement range, 3.8 to 20.5 mA.

`step(frame)` returns one `Change` per published transition, frame order, slots in the
order each point declares them. No lifecycle (latch, ack, shelve, chatter): that is tested
by targeted cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.core.model import Frame, PointSpec, Quality, ThresholdRule
from agent.core.rulespec import PointRules
from tests.oracles.measures import Counter, RateFit, Window, percent_of

LEVEL_NAMES = {0: None, 1: "warning", 2: "alarm", 3: "critical"}
Test = Callable[[float], bool]


@dataclass(frozen=True)
class Change:
    """One published transition of one alarm."""

    alarm_id: str
    transition: str  # raise, escalate, deescalate, clear
    level: str | None  # the new level (None: cleared)
    ts: float
    threshold: float  # the threshold of the new level, or of the old one on a clear


def transition(old: int, new: int) -> str:
    if old == 0:
        return "raise"
    if new == 0:
        return "clear"
    return "escalate" if new > old else "deescalate"


@dataclass
class Detector:
    """One level of one alarm: raises when `raises(m)` holds `on_delay` s, clears when
    `clears(m)` holds `off_delay` s."""

    slot: str
    level: int
    threshold: float
    raises: Test
    clears: Test
    on_delay: float
    off_delay: float
    gated: bool
    active: bool = False
    waiting_since: float | None = None

    def see(self, m: float, t: float, gate: str) -> bool:
        """Advance with measure m at t; gate: "on", "off" or "unknown". True if it flipped."""
        if self.gated and gate == "off":
            holds = self.active  # the condition does not count: it is normal, whatever m is
        elif math.isnan(m) or (self.gated and gate == "unknown"):
            holds = False
        else:
            holds = self.clears(m) if self.active else self.raises(m)
        if not holds:
            self.waiting_since = None
            return False
        if self.waiting_since is None or t < self.waiting_since:
            self.waiting_since = t
        if t - self.waiting_since >= (self.off_delay if self.active else self.on_delay):
            self.active = not self.active
            self.waiting_since = None
            return True
        return False


def above(limit: float) -> Test:
    return lambda m: m >= limit


def below(limit: float) -> Test:
    return lambda m: m <= limit


def under_half(threshold: float) -> tuple[Test, Test]:
    """(raise, clear) of a signed threshold that clears under half of it: a positive one is
    a rise (m >= thr, clear m <= thr/2), a negative one a fall (m <= thr, clear m >= thr/2)."""
    if threshold < 0:
        return below(threshold), above(threshold / 2)
    return above(threshold), below(threshold / 2)


def fewer_than(n: float) -> Test:
    return lambda m: m < n


def with_band(threshold: float, hysteresis_pct: float, high: bool) -> tuple[Test, Test]:
    """(raise, clear) of a threshold with a hysteresis band of a % of its magnitude."""
    band = abs(threshold) * hysteresis_pct / 100
    if high:
        return above(threshold), below(threshold - band)
    return below(threshold), above(threshold + band)


# --- one point -----------------------------------------------------------------------------


class PointRef:
    """Every alarm of one point: its detectors (by measure name) and what the measures need."""

    def __init__(self, p: PointSpec) -> None:
        self.spec = p
        self.detectors: list[tuple[str, Detector]] = []
        self.published: dict[str, int] = {}
        q = p.rules
        r = p.rule or ThresholdRule()  # DOMAIN.md defaults: 30 s on, 60 s off, 2 %
        self.on_delay, self.off_delay, self.hyst = r.on_delay, r.off_delay, r.hysteresis_pct
        if p.rule is not None:
            self._thresholds(p.rule, q)
        if q.minus is not None:
            self._pair("diff", "diff", q.diff_warning, q.diff_alarm, banded=True)
        self._pair("rate", "rate", q.rate_warning, q.rate_alarm, on=(q.rate_hold, q.rate_hold))
        hold = self.on_delay if q.deviation_hold is None else q.deviation_hold
        self._pair("dev", "deviation", q.deviation_warning, q.deviation_alarm, on=(hold, None))
        self._pair("drop", "drop", q.drop_warning, q.drop_alarm)
        for lvl, n in ((1, q.count_warning), (2, q.count_alarm)):
            if n is not None:  # a count of whole events: "below n" clears; no on-delay, ungated
                self._add(
                    "count",
                    "count",
                    lvl,
                    threshold=n,
                    tests=(above(n), fewer_than(n)),
                    on_delay=0.0,
                    gated=False,
                )
        self._states(q)
        self._quality(q)
        self.rate = RateFit(q.rate_window)
        self.baseline, self.baseline_t = math.nan, math.nan
        self.peaks = Window(q.drop_window / 10)
        self.counted = Window(q.count_window / 10)
        self.counter = Counter(q.count_bits)
        self.last_good_t = math.nan
        self.run_value, self.run_length = math.nan, 0

    def _add(
        self,
        name: str,
        slot: str,
        level: int,
        *,
        threshold: float,
        tests: tuple[Test, Test],
        on_delay: float,
        gated: bool,
        off_delay: float | None = None,
    ) -> None:
        off = self.off_delay if off_delay is None else off_delay
        up, down = tests
        det = Detector(slot, level, threshold, up, down, on_delay, off, gated)
        self.detectors.append((name, det))

    def _gated(self, level: int) -> bool:
        q = self.spec.rules
        return q.when is not None and level >= q.when_min_level

    def _thresholds(self, r: ThresholdRule, q: PointRules) -> None:
        for slot, high, levels in (
            ("high", True, ((1, r.high_warning), (2, r.high_alarm))),
            ("low", False, ((1, r.low_warning), (2, r.low_alarm))),
        ):
            for lvl, thr in levels:
                if thr is not None:
                    up, down = with_band(thr, r.hysteresis_pct, high)
                    self._add(
                        "x",
                        slot,
                        lvl,
                        threshold=thr,
                        tests=(up, down),
                        on_delay=r.on_delay,
                        gated=self._gated(lvl),
                    )

    def _pair(
        self,
        name: str,
        slot: str,
        warning: float | None,
        alarm: float | None,
        *,
        banded: bool = False,
        on: tuple[float | None, float | None] = (None, None),
    ) -> None:
        for lvl, thr, delay in ((1, warning, on[0]), (2, alarm, on[1])):
            if thr is None:
                continue
            if banded:  # the difference rule: the point's hysteresis, a negative one is a fall
                up, down = with_band(thr, self.hyst, thr >= 0)
            elif name == "drop":  # percent fallen: always a fall, stated as a positive number
                up, down = above(thr), below(thr / 2)
            else:
                up, down = under_half(thr)
            d = self.on_delay if delay is None else delay
            self._add(
                name, slot, lvl, threshold=thr, tests=(up, down), on_delay=d, gated=self._gated(lvl)
            )

    def _states(self, q: PointRules) -> None:
        one, zero = above(1.0), below(0.0)  # the measure: 1 in the set, 0 not
        for lvl, values in ((1, q.state_warning), (2, q.state_alarm), (3, q.state_critical)):
            if values:
                self._add(
                    f"state{lvl}",
                    "state",
                    lvl,
                    threshold=math.nan,
                    tests=(one, zero),
                    on_delay=q.state_delay,
                    gated=False,
                )
        if q.idle_states and q.when is not None:
            self._add(
                "idle",
                "idle",
                2,
                threshold=math.nan,
                tests=(one, zero),
                on_delay=q.idle_delay,
                gated=True,
            )

    def _quality(self, q: PointRules) -> None:
        if q.stale_after is not None:
            stale = (
                q.stale_after
            )  # clears with a good reading (age 0; or a clock step back past it)
            self._add(
                "stale",
                "stale",
                1,
                threshold=stale,
                tests=(above(stale), below(0.0)),
                on_delay=0.0,
                gated=False,
                off_delay=0.0,
            )
        if q.frozen_polls is not None:
            n = float(q.frozen_polls)  # clears when the reading changes (a run of 1)
            self._add(
                "frozen",
                "frozen",
                1,
                threshold=n,
                tests=(above(n), below(1.0)),
                on_delay=0.0,
                gated=False,
                off_delay=0.0,
            )
        if q.range_min is not None or q.range_max is not None:
            one, zero = above(1.0), below(0.0)
            self._add(
                "range",
                "range",
                1,
                threshold=math.nan,
                tests=(one, zero),
                on_delay=self.on_delay,
                gated=False,
            )
            if q.loop_ma and q.range_min is not None and q.range_max is not None:
                fault: Test = lambda ma: ma < 3.6 or ma > 21.0  # noqa: E731
                healthy: Test = lambda ma: 3.8 <= ma <= 20.5  # noqa: E731
                self._add(
                    "loop",
                    "loop",
                    2,
                    threshold=math.nan,
                    tests=(fault, healthy),
                    on_delay=self.on_delay,
                    gated=False,
                )

    # -- measures of one reading ------------------------------------------------------------

    def measures(
        self, x: float, t: float, values: dict[int, float], dead: bool
    ) -> dict[str, float]:
        q = self.spec.rules
        names = {n for n, _ in self.detectors}
        # a non-finite reading is no measured value (issue 13): value rules see none, the
        # sensor-quality rules below judge it
        raw, x = x, (x if math.isfinite(x) else math.nan)
        good = not math.isnan(x)
        m = {"x": x}
        if "diff" in names and q.minus is not None:
            other = values.get(q.minus, math.nan)
            m["diff"] = x - (other if math.isfinite(other) else math.nan)
        if "rate" in names:
            m["rate"] = self._rate(x, t) if good else math.nan
        if "dev" in names:
            m["dev"] = self._deviation(x, t) if good else math.nan
        if "drop" in names:
            self.peaks.see(t)
            m["drop"] = self._drop(x, t) if good else math.nan
        if "count" in names:
            self.counted.see(t)
            m["count"] = self._count(x, t) if good else math.nan
        whole = good and 0 <= x <= 62 and x == math.floor(x)
        sets = (q.state_warning, q.state_alarm, q.state_critical, q.idle_states)
        for name, values_ in zip(("state1", "state2", "state3", "idle"), sets, strict=True):
            m[name] = float(int(x) in values_) if whole else math.nan
        m.update(self._sensor(raw, t, dead))
        return m

    def _rate(self, x: float, t: float) -> float:
        q = self.spec.rules
        self.rate.add(t, x)
        per_s, level = self.rate.slope(t)
        per = per_s * q.rate_per
        return percent_of(per, level) if q.rate_relative else per

    def _deviation(self, x: float, t: float) -> float:
        q = self.spec.rules
        base = self.baseline
        dev = x - base if q.deviation_absolute else percent_of(x - base, base)
        if math.isnan(base):
            self.baseline = x
        else:
            dt = max(0.0, t - self.baseline_t)  # a clock step back does not move it
            self.baseline = base + (1 - math.exp(-dt / q.baseline_tau)) * (x - base)
        self.baseline_t = t
        return dev

    def _drop(self, x: float, t: float) -> float:
        self.peaks.add(t, x)
        top = max(self.peaks.live(t))
        return (top - x) / top * 100 if top > 0 else math.nan

    def _count(self, x: float, t: float) -> float:
        self.counted.add(t, self.counter.events(x))
        return sum(self.counted.live(t))

    def _sensor(self, x: float, t: float, dead: bool) -> dict[str, float]:
        q = self.spec.rules
        fine = math.isfinite(x)  # ±inf is a bad reading too
        if fine or math.isnan(self.last_good_t):
            self.last_good_t = t  # stale counts from the last good (or the first) reading
        if fine:
            same = x == self.run_value
            self.run_value, self.run_length = x, self.run_length + 1 if same else 1
        lo = -math.inf if q.range_min is None else q.range_min
        hi = math.inf if q.range_max is None else q.range_max
        out = {"stale": math.nan if dead else t - self.last_good_t}
        if math.isinf(x):  # beyond any configured range
            out["range"] = 0.0 if lo <= x <= hi else 1.0
        if fine:
            out["frozen"] = float(self.run_length)
            out["range"] = 0.0 if lo <= x <= hi else 1.0
            if math.isfinite(hi - lo):
                out["loop"] = 4 + 16 * (x - lo) / (hi - lo)
        return out

    # -- detectors and published levels -----------------------------------------------------

    def step(
        self, x: float, t: float, gate: str, values: dict[int, float], dead: bool
    ) -> list[Change]:
        m = self.measures(x, t, values, dead)
        flipped: list[str] = []
        for name, det in self.detectors:
            if det.see(m.get(name, math.nan), t, gate) and det.slot not in flipped:
                flipped.append(det.slot)
        out = []
        for slot in flipped:
            dets = [d for _, d in self.detectors if d.slot == slot]
            new = max((d.level for d in dets if d.active), default=0)
            old = self.published.get(slot, 0)
            if new != old:
                self.published[slot] = new
                thr = next(d.threshold for d in dets if d.level == (new or old))
                aid = f"{self.spec.code}:{slot}"
                out.append(Change(aid, transition(old, new), LEVEL_NAMES[new], t, thr))
        return out


class RulesReference:
    """All points: the latest reading of each (for gates and differences), one `PointRef` each."""

    def __init__(self, points: Sequence[PointSpec]) -> None:
        self.points = {p.index: PointRef(p) for p in points}
        self.values: dict[int, float] = {}

    def unit(self, i: int) -> tuple[str, int] | int:
        ref = self.points.get(i)
        return i if ref is None else (ref.spec.bus, ref.spec.unit_id)

    def step(self, frame: Frame) -> list[Change]:
        rows = list(
            zip(frame.index.tolist(), frame.ts.tolist(), frame.value.tolist(),
                frame.quality.tolist(), strict=True)
        )  # fmt: skip
        for i, _, x, _ in rows:
            self.values[i] = x
        # a unit is dead in this frame when none of its readings got through
        answered = {self.unit(i) for i, _, _, qual in rows if not qual & Quality.COMM_FAIL}
        out: list[Change] = []
        for i, t, x, qual in rows:
            ref = self.points.get(i)
            if ref is None:
                continue
            dead = bool(qual & Quality.COMM_FAIL) and self.unit(i) not in answered
            out += ref.step(x, t, self.gate(ref.spec), self.values, dead)
        return out

    def gate(self, p: PointSpec) -> str:
        if p.rules.when is None:
            return "on"
        g = self.values.get(p.rules.when, math.nan)
        return "unknown" if math.isnan(g) else "on" if g >= 0.5 else "off"
