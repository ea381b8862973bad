"""The rule kinds per point in plain Python: the reference the vectorized engine is tested
against (tests/unit/test_rule_kinds.py) and the loop it is timed against (bench/rules.py).

Same semantics as agent.rules.engine (gates, every kind, slot levels); no lifecycle (latch,
ack, shelve, chatter). `step` returns (alarm_id, transition, level) per published change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.core.model import Frame, PointSpec, Quality
from agent.rules.quality import LOOP_HIGH_MA, LOOP_LOW_MA
from agent.rules.texts import LEVELS, transition_of
from agent.rules.window import BUCKETS

INF = math.inf


@dataclass
class Det:
    """One debounced detector."""

    sign: float
    on: float
    off: float
    on_delay: float
    off_delay: float
    level: int
    slot: str
    gated: bool
    active: bool = False
    since: float | None = None

    def update(self, m: float, t: float) -> bool:
        """Advance; True when the detector flipped."""
        if math.isnan(self.on):
            return False
        s = self.sign
        cond = (-s * m >= -s * self.off) if self.active else (s * m >= s * self.on)
        if not cond:
            self.since = None
            return False
        if self.since is None or not self.since <= t:
            self.since = t
        if t - self.since >= (self.off_delay if self.active else self.on_delay):
            self.active = not self.active
            self.since = None
            return True
        return False


def _n(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _pct(a: float, b: float) -> float:
    """a / |b| * 100 with numpy's float semantics (NaN in, NaN out; x/0 = ±inf, 0/0 = NaN)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if b == 0:
        return math.nan if a == 0 else math.copysign(INF, a)
    return a / abs(b) * 100.0


def _sgn(v: float) -> float:
    return -1.0 if v < 0 else 1.0


@dataclass
class PointState:
    spec: PointSpec
    dets: list[tuple[str, Det]] = field(default_factory=list)  # (measure name, detector)
    levels: dict[str, int] = field(default_factory=dict)
    # rate
    sums: list[float] = field(default_factory=lambda: [0.0] * 5)
    count: float = 0.0
    last: float = math.nan
    start: float = math.nan
    # deviation
    base: float = math.nan
    dlast: float = math.nan
    # drop / count buckets
    drop_ids: list[float] = field(default_factory=lambda: [-INF] * BUCKETS)
    drop_vals: list[float] = field(default_factory=lambda: [-INF] * BUCKETS)
    cnt_ids: list[float] = field(default_factory=lambda: [-INF] * BUCKETS)
    cnt_vals: list[float] = field(default_factory=lambda: [INF] * BUCKETS)
    raw: float = math.nan
    total: float = 0.0
    # quality
    last_good: float = math.nan
    prev: float = math.nan
    same: float = 0.0


def _build(p: PointSpec) -> PointState:
    st = PointState(p)
    r, q = p.rule, p.rules
    od = r.off_delay if r else 60.0
    ond = r.on_delay if r else 30.0
    add = st.dets.append
    if r is not None and r.enabled:
        for slot, sign, levels in (
            ("high", 1.0, ((1, r.high_warning), (2, r.high_alarm))),
            ("low", -1.0, ((1, r.low_warning), (2, r.low_alarm))),
        ):
            for lvl, thr in levels:
                on = _n(thr)
                off = on - sign * (abs(on) * r.hysteresis_pct / 100.0)
                gated = lvl >= q.when_min_level
                add(("x", Det(sign, on, off, r.on_delay, r.off_delay, lvl, slot, gated)))
    if q.minus is not None and (q.diff_warning is not None or q.diff_alarm is not None):
        st.dets += _diff_dets(p)
    if q.rate_warning is not None or q.rate_alarm is not None:
        for lvl, thr in ((1, q.rate_warning), (2, q.rate_alarm)):
            on = _n(thr)
            gated = lvl >= q.when_min_level
            add(("rate", Det(_sgn(on), on, on * 0.5, q.rate_hold, od, lvl, "rate", gated)))
    if q.deviation_warning is not None or q.deviation_alarm is not None:
        for lvl, thr in ((1, q.deviation_warning), (2, q.deviation_alarm)):
            on = _n(thr)
            hold = q.deviation_hold if lvl == 1 and q.deviation_hold is not None else ond
            gated = lvl >= q.when_min_level
            add(("dev", Det(_sgn(on), on, on * 0.5, hold, od, lvl, "deviation", gated)))
    if q.drop_warning is not None or q.drop_alarm is not None:
        for lvl, thr in ((1, q.drop_warning), (2, q.drop_alarm)):
            on = _n(thr)
            gated = lvl >= q.when_min_level
            add(("drop", Det(1.0, on, on * 0.5, ond, od, lvl, "drop", gated)))
    if q.count_warning is not None or q.count_alarm is not None:
        for lvl, thr in ((1, q.count_warning), (2, q.count_alarm)):
            on = _n(thr)
            add(("count", Det(1.0, on, on - 0.5, 0.0, od, lvl, "count", False)))
    idle = bool(q.idle_states) and q.when is not None
    if q.state_warning or q.state_alarm or q.state_critical or idle:
        sets = ((1, q.state_warning), (2, q.state_alarm), (3, q.state_critical))
        for lvl, values in sets:
            on = 0.5 if values else math.nan
            add((f"state:{lvl}", Det(1.0, on, on, q.state_delay, od, lvl, "state", False)))
        on = 0.5 if idle else math.nan
        add(("state:idle", Det(1.0, on, on, q.idle_delay, od, 2, "idle", True)))
    ranged = q.range_min is not None or q.range_max is not None
    if q.stale_after is not None or q.frozen_polls is not None or ranged:
        both = q.range_min is not None and q.range_max is not None
        stale = _n(q.stale_after)
        frozen = _n(None if q.frozen_polls is None else float(q.frozen_polls))
        rng = 0.5 if ranged else math.nan
        loop = 1e-9 if q.loop_ma and both else math.nan
        add(("stale", Det(1.0, stale, stale * 0.5, 0.0, 0.0, 1, "stale", False)))
        add(("frozen", Det(1.0, frozen, 1.5, 0.0, 0.0, 1, "frozen", False)))
        add(("range", Det(1.0, rng, rng, ond, od, 1, "range", False)))
        add(("loop", Det(1.0, loop, -0.1, ond, od, 2, "loop", False)))
    return st


def _diff_dets(p: PointSpec) -> list[tuple[str, Det]]:
    r, q = p.rule, p.rules
    hyst = r.hysteresis_pct if r else 2.0
    ond, od = (r.on_delay, r.off_delay) if r else (30.0, 60.0)
    first = _sgn(_n(q.diff_warning))
    out = []
    for lvl, thr in ((1, q.diff_warning), (2, q.diff_alarm)):
        on = _n(thr)
        sign = first if math.isnan(on) else _sgn(on)
        off = on - sign * (abs(on) * hyst / 100.0)
        out.append(("diff", Det(sign, on, off, ond, od, lvl, "diff", lvl >= q.when_min_level)))
    return out


class ScalarEngine:
    """The reference: one point at a time, one rule at a time."""

    def __init__(self, points: Sequence[PointSpec]) -> None:
        self.points = {p.index: _build(p) for p in points}
        self.value: dict[int, float] = {}

    def step(self, frame: Frame) -> list[tuple[str, str, str | None]]:
        idx, ts, xs = frame.index.tolist(), frame.ts.tolist(), frame.value.tolist()
        comm = [bool(q & Quality.COMM_FAIL) for q in frame.quality.tolist()]
        for i, x in zip(idx, xs, strict=True):
            self.value[i] = x if math.isfinite(x) else math.nan  # ±Inf: missing to value rules
        # a unit answered if any of its readings in the frame did not fail with COMM_FAIL
        answered = {self._unit(i) for i, c in zip(idx, comm, strict=True) if not c}
        out: list[tuple[str, str, str | None]] = []
        for i, t, x, c in zip(idx, ts, xs, comm, strict=True):
            st = self.points.get(i)
            if st is None or not st.dets:
                continue
            out += self._point(st, x, t, dead=c and self._unit(i) not in answered)
        return out

    def _unit(self, i: int) -> tuple[str, int]:
        st = self.points.get(i)
        return ("", -1 - i) if st is None else (st.spec.bus, st.spec.unit_id)

    def _measures(self, st: PointState, x: float, t: float, dead: bool) -> dict[str, float]:
        q = st.spec.rules
        names = {n for n, _ in st.dets}
        raw, x = x, (x if math.isfinite(x) else math.nan)  # value rules never see ±Inf
        m: dict[str, float] = {"x": x}
        ok = not math.isnan(x)
        if "rate" in names:
            m["rate"] = self._rate(st, x, t, ok)
        if "diff" in names:
            m["diff"] = x - self.value.get(q.minus, math.nan) if q.minus is not None else math.nan
        if "dev" in names:
            base = st.base
            m["dev"] = x - base if q.deviation_absolute else _pct(x - base, base)
            if ok:
                dt = max(t - st.dlast, 0.0) if st.dlast == st.dlast else math.nan
                if math.isnan(base):
                    st.base = x
                else:
                    st.base = base + (-math.expm1(-dt / q.baseline_tau)) * (x - base)
                st.dlast = t
        if "drop" in names:
            top = self._bucket(
                st.drop_ids, st.drop_vals, q.drop_window / BUCKETS, t, x, ok=ok, first=False
            )
            m["drop"] = (top - x) / abs(top) * 100.0 if ok and top > 0 else math.nan
        if "count" in names:
            before = st.total
            if ok:
                delta = x - st.raw
                if delta < 0:
                    delta += 2.0**q.count_bits
                if math.isnan(delta) or delta > 2.0**q.count_bits / 2:
                    delta = 0.0
                st.total += delta
                st.raw = x
            start = self._bucket(
                st.cnt_ids, st.cnt_vals, q.count_window / BUCKETS, t, before, ok=ok, first=True
            )
            m["count"] = st.total - start if ok else math.nan
        if any(n.startswith("state:") for n in names):
            valid = ok and 0 <= x <= 62 and math.floor(x) == x
            sets = {
                "state:1": q.state_warning,
                "state:2": q.state_alarm,
                "state:3": q.state_critical,
                "state:idle": q.idle_states,
            }
            for name, values in sets.items():
                m[name] = (1.0 if int(x) in values else 0.0) if valid else math.nan
        if "stale" in names:
            m.update(self._quality(st, raw, t, dead))
        return m

    @staticmethod
    def _quality(st: PointState, x: float, t: float, dead: bool) -> dict[str, float]:
        q = st.spec.rules
        fin = math.isfinite(x)  # ±inf is a bad reading (BAD_VALUE), like NaN
        if fin or math.isnan(st.last_good):
            st.last_good = t
        same = st.same + 1.0 if x == st.prev else 0.0
        if fin:
            st.same = same
            st.prev = x
        lo = -INF if q.range_min is None else q.range_min
        hi = INF if q.range_max is None else q.range_max
        ma = 4.0 + 16.0 * (x - lo) / (hi - lo) if hi - lo not in (INF, -INF) else math.nan
        return {
            "stale": math.nan if dead else t - st.last_good,  # comm_loss covers a dead unit
            "frozen": st.same + 1.0 if fin else math.nan,
            "range": math.nan if math.isnan(x) else (1.0 if x < lo or x > hi else 0.0),
            "loop": max(LOOP_LOW_MA - ma, ma - LOOP_HIGH_MA) if fin else math.nan,
        }

    def _rate(self, st: PointState, x: float, t: float, ok: bool) -> float:
        q = st.spec.rules
        if not ok:
            return math.nan
        dt = t - st.last
        if not dt >= 0:
            st.sums = [1.0, 0.0, x, 0.0, 0.0]
            st.count = 1.0
            st.start = t
        else:
            w, s_t, s_x, s_tt, s_tx = st.sums
            c = dt
            decay = math.exp(-c / q.rate_window)
            s_tt = (s_tt - 2 * c * s_t + c * c * w) * decay
            s_tx = (s_tx - c * s_x) * decay
            s_t = (s_t - c * w) * decay
            w = w * decay + 1.0
            s_x = s_x * decay + x
            st.sums = [w, s_t, s_x, s_tt, s_tx]
            st.count += 1.0
        st.last = t
        w, s_t, s_x, s_tt, s_tx = st.sums
        den = w * s_tt - s_t * s_t
        if st.count < 3 or t - st.start < q.rate_window * 0.25 or not den > 1e-12 * w * w:
            return math.nan
        slope = (w * s_tx - s_t * s_x) / den * q.rate_per
        return _pct(slope, s_x / w) if q.rate_relative else slope

    @staticmethod
    def _bucket(
        ids: list[float],
        vals: list[float],
        width: float,
        t: float,
        v: float,
        *,
        ok: bool,
        first: bool,
    ) -> float:
        bid = math.floor(t / width)
        pos = int(bid % BUCKETS)
        if ok:
            if ids[pos] == bid:
                vals[pos] = vals[pos] if first else max(vals[pos], v)
            else:
                vals[pos] = v
            ids[pos] = bid
        live = [vals[k] for k in range(BUCKETS) if ids[k] > bid - BUCKETS]
        fill = INF if first else -INF
        return (min(live, default=fill)) if first else max(live, default=fill)

    def _point(
        self, st: PointState, x: float, t: float, *, dead: bool
    ) -> list[tuple[str, str, str | None]]:
        m = self._measures(st, x, t, dead)
        q = st.spec.rules
        gate_on, gate_unknown = True, False
        if q.when is not None:
            g = self.value.get(q.when, math.nan)
            gate_unknown = math.isnan(g)
            gate_on = not gate_unknown and g >= 0.5
        flipped: list[str] = []
        for name, det in st.dets:
            v = m[name]
            if det.gated and q.when is not None and not gate_on:
                v = math.nan if gate_unknown else -det.sign * INF
            if det.update(v, t) and det.slot not in flipped:
                flipped.append(det.slot)
        out: list[tuple[str, str, str | None]] = []
        for slot in flipped:
            new = max((d.level for _, d in st.dets if d.slot == slot and d.active), default=0)
            prev = st.levels.get(slot, 0)
            if new != prev:
                st.levels[slot] = new
                out.append((f"{st.spec.code}:{slot}", transition_of(prev, new), LEVELS[new]))
        return out
