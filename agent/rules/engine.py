"""RuleEngine: every rule kind over every point, one vectorized step per frame."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.core.model import AlarmEvent, Direction, Frame, Level, PointSpec
from agent.core.model import Quality as Q
from agent.rules.base import Kind
from agent.rules.lifecycle import AlarmState, chattering
from agent.rules.quality import Quality
from agent.rules.rows import BoolArray, Cols, FloatArray, IntArray
from agent.rules.state import State
from agent.rules.texts import LEVELS, make_event, operator_texts, transition_of
from agent.rules.threshold import Difference, Threshold
from agent.rules.trend import Deviation, Rate
from agent.rules.window import Count, Drop

_COMM_FAIL = np.uint8(Q.COMM_FAIL)

# kind class -> does a point use it?
KINDS: tuple[tuple[type[Kind], Callable[[PointSpec], bool]], ...] = (
    (Threshold, lambda p: p.rule is not None and p.rule.enabled),
    (
        Difference,
        lambda p: (
            p.rules.minus is not None
            and (p.rules.diff_warning is not None or p.rules.diff_alarm is not None)
        ),
    ),
    (Rate, lambda p: p.rules.rate_warning is not None or p.rules.rate_alarm is not None),
    (
        Deviation,
        lambda p: p.rules.deviation_warning is not None or p.rules.deviation_alarm is not None,
    ),
    (Drop, lambda p: p.rules.drop_warning is not None or p.rules.drop_alarm is not None),
    (Count, lambda p: p.rules.count_warning is not None or p.rules.count_alarm is not None),
    (
        State,
        lambda p: bool(
            p.rules.state_warning
            or p.rules.state_alarm
            or p.rules.state_critical
            or (p.rules.idle_states and p.rules.when is not None)
        ),
    ),
    (
        Quality,
        lambda p: (
            p.rules.stale_after is not None
            or p.rules.frozen_polls is not None
            or p.rules.range_min is not None
            or p.rules.range_max is not None
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm whose published level is not normal."""

    alarm_id: str
    point: str  # platform point code
    device: str
    key: str
    kind: str
    direction: Direction
    level: Level
    since: float  # source ts of the raise (the step out of normal)
    value: float  # latest reading of the point (NaN if that reading was bad)
    threshold: float  # threshold of the current level
    unit: str
    acked: bool = False
    shelved_until: float | None = None


class AlarmLookupError(LookupError):
    """An operator named an alarm id the engine does not know or that is not active."""


class RuleEngine:
    """Alarm state for all points and rule kinds, advanced one frame (one bus) at a time.

    `step(frame)` returns the published transitions (raise, escalate, deescalate, clear,
    and unshelve when a shelf expires). `ack`, `shelve`, `unshelve` apply operator actions
    and return their events. `snapshot` / `restore` carry the alarm state across a restart.
    Not thread-safe.
    """

    def __init__(self, points: Sequence[PointSpec]) -> None:
        n = max((p.index for p in points), default=-1) + 1
        self._specs: list[PointSpec | None] = [None] * n
        for p in points:
            self._specs[p.index] = p
        self._by_code = {p.code: p.index for p in points}
        self._value = np.full(n, np.nan)
        self._pos = np.full(n, -1, dtype=np.intp)
        self._gate_of = np.full(n, -1, dtype=np.intp)  # the gate point of each point
        # each point's field unit (bus, unit id) as a small integer: comm loss is per unit
        units: dict[tuple[str, int], int] = {}
        self._unit_of = np.full(n, -1, dtype=np.intp)
        for p in points:
            self._gate_of[p.index] = -1 if p.rules.when is None else p.rules.when
            self._unit_of[p.index] = units.setdefault((p.bus, p.unit_id), len(units))
        self._unit_of[self._unit_of < 0] = len(units)  # indices with no spec: one more unit
        self._units = len(units) + 1
        self.kinds: list[Kind] = []
        self._level: list[npt_int8] = []
        for cls, uses in KINDS:
            specs = [p for p in sorted(points, key=lambda q: q.index) if uses(p)]
            if specs:
                kind = cls(specs, self._value)
                self.kinds.append(kind)
                self._level.append(np.zeros((len(kind.slots), len(kind)), dtype=np.int8))
        self._any_gate = any(k.has_gate for k in self.kinds)
        self._suffix = {
            s.suffix: (k, si)
            for k, kind in enumerate(self.kinds)
            for si, s in enumerate(kind.slots)
        }
        self._states: dict[str, AlarmState] = {}
        self._shelved = 0  # how many entries have a shelf (skip the expiry scan when 0)

    def __len__(self) -> int:
        return len(self._specs)

    # -- the tick -------------------------------------------------------------------------

    def step(self, frame: Frame) -> list[AlarmEvent]:
        """Advance the points in `frame` (unique indices); return the published changes.

        Each kind measures every column of the frame (its own state must follow every
        reading), then asks which columns may change a detector (`Kind.busy`); only those few
        go through the debounce, the gates and the events."""
        idx, x, t = frame.index, frame.value, frame.ts
        k = idx.shape[0]
        if k == 0:
            return []
        lo, hi = int(idx[0]), int(idx[-1])
        contiguous = hi - lo == k - 1 and (k == 1 or bool((np.diff(idx) == 1).all()))
        if contiguous:
            self._value[lo : hi + 1] = x
        else:
            self._value[idx] = x
            self._pos[idx] = np.arange(k)
        gate_on: BoolArray | None = None
        gate_off: BoolArray | None = None
        if self._any_gate:
            gate_on, gate_off = self._gates(slice(lo, hi + 1) if contiguous else idx)
        dead = self._dead(idx, frame.quality)
        events: list[AlarmEvent] = []
        try:
            for ki, kind in enumerate(self.kinds):
                sel = self._select(kind, idx, lo, hi, contiguous)
                if sel is None:
                    continue
                cols, fpos = sel
                xs, ts = x[fpos], t[fpos]
                m = kind.measure(cols, xs, ts, None if dead is None else dead[fpos])
                if kind.has_gate and gate_on is not None and gate_off is not None:
                    busy = kind.busy(cols, m, gate_on[fpos], gate_off[fpos])
                else:
                    busy = kind.busy(cols, m, None, None)
                cand = np.flatnonzero(busy)
                if cand.size:
                    events += self._advance(ki, kind, sel, cand, xs=xs, ts=ts, m=m)
        finally:
            if not contiguous:
                self._pos[idx] = -1
        if self._shelved:
            events += self._expire(float(np.max(t)))
        return events

    def _gates(self, idx: Cols) -> tuple[BoolArray, BoolArray]:
        """Per frame position: the point's gate is on (or it has none); the gate is off."""
        g = self._gate_of[idx]
        has = g >= 0
        gv = self._value[g]
        with np.errstate(invalid="ignore"):
            on = gv >= 0.5
            off = gv < 0.5
        on |= ~has
        off &= has
        return on, off

    def _dead(self, idx: IntArray, quality: npt.NDArray[np.uint8]) -> BoolArray | None:
        """Per frame position: COMM_FAIL and no point of its unit answered (None: no failure)."""
        comm = (quality & _COMM_FAIL) != 0
        if not comm.any():
            return None
        unit = self._unit_of[idx]
        answered = np.zeros(self._units, dtype=bool)
        answered[unit[~comm]] = True
        dead: BoolArray = comm & ~answered[unit]
        return dead

    def _select(
        self, kind: Kind, idx: IntArray, lo: int, hi: int, contiguous: bool
    ) -> tuple[Cols, slice | IntArray] | None:
        """The kind's columns in this frame and where their values are in the frame."""
        pts = kind.points
        if contiguous:
            a = int(np.searchsorted(pts, lo))
            b = int(np.searchsorted(pts, hi, side="right"))
            if a == b:
                return None
            first, last = int(pts[a]), int(pts[b - 1])
            if last - first == b - a - 1:  # the kind's points here are a run: all views
                return slice(a, b), slice(first - lo, last - lo + 1)
            return slice(a, b), pts[a:b] - lo
        p = self._pos[pts]
        cols = np.flatnonzero(p >= 0)
        if cols.size == 0:
            return None
        return cols, p[cols]

    def _advance(
        self,
        ki: int,
        kind: Kind,
        sel: tuple[Cols, slice | IntArray],
        cand: IntArray,
        *,
        xs: FloatArray,
        ts: FloatArray,
        m: FloatArray,
    ) -> list[AlarmEvent]:
        """The debounce, gates and events for the busy columns `cand` of a selection."""
        cols, fpos = sel
        sub = cand + cols.start if isinstance(cols, slice) else cols[cand]
        where = cand + fpos.start if isinstance(fpos, slice) else fpos[cand]
        xc, tc = xs[cand], ts[cand]
        raw = kind.rows_measure(sub, m[:, cand], xc)
        gated = self._gated(kind, sub, raw) if kind.has_gate else raw
        fire = kind.rows.step(sub, gated, tc)
        if not fire.any():
            return []
        return self._fire(ki, kind, (sub, where), fire, xs=xc, ts=tc, m=raw)

    def _gated(self, kind: Kind, cols: Cols, m: FloatArray) -> FloatArray:
        """Gated rows see the most normal measure while the gate is off, NaN while unknown."""
        g = kind.gate[cols]
        gv = self._value[g]
        has = g >= 0
        on = ~has | (gv >= 0.5)
        unknown = has & np.isnan(gv)
        sign = kind.rows.sign[:, cols]
        normal = np.where(unknown, np.nan, -sign * np.inf)
        full = np.broadcast_to(m, sign.shape)
        gated = np.where(on, full, normal)
        return np.where(kind.row_gate[:, cols], gated, full)

    def _fire(
        self,
        ki: int,
        kind: Kind,
        where: tuple[IntArray, IntArray],
        fire: BoolArray,
        *,
        xs: FloatArray,
        ts: FloatArray,
        m: FloatArray,
    ) -> list[AlarmEvent]:
        absolute, frame_pos = where
        rows, js = np.nonzero(fire)
        kind.toggle(rows, absolute[js])
        levels = self._level[ki]
        events: list[AlarmEvent] = []
        # frame order, and slot order within a point (high before low)
        fired = {
            (int(frame_pos[j]), int(j), kind.row_slot[int(r)])
            for r, j in zip(rows, js, strict=True)
        }
        for _, j, s in sorted(fired):
            c = int(absolute[j])
            prev, new = int(levels[s, c]), kind.slot_level(s, c)
            if new == prev:
                continue
            levels[s, c] = new
            row = kind.row_for(s, prev if new == 0 else new, c)
            assert row is not None
            mm = float(m[row if m.shape[0] > 1 else 0, j])
            value, thr, unit = kind.describe(row, c, float(xs[j]), mm)
            ev = self._publish(kind, s, c, new, value=value, thr=thr, unit=unit, ts=float(ts[j]))
            if ev is not None:
                events.append(ev)
        return events

    # -- lifecycle ------------------------------------------------------------------------

    def _publish(
        self,
        kind: Kind,
        s: int,
        c: int,
        computed: int,
        *,
        value: float,
        thr: float,
        unit: str,
        ts: float,
    ) -> AlarmEvent | None:
        spec = kind.specs[c]
        slot = kind.slots[s]
        aid = f"{spec.code}:{slot.suffix}"
        st = self._states.get(aid)
        if st is None:
            st = self._states[aid] = AlarmState()
        if computed > st.computed:
            st.acked = False  # a new raise or escalation needs a new acknowledgement
        st.computed = computed
        if spec.rules.latch:
            st.held = max(st.held, computed)
        eff = st.effective()
        ev = None
        if eff != st.published and st.shelved_until is None:
            ev = self._event(
                spec, kind, s, st.published, eff, value=value, thr=thr, unit=unit, ts=ts, st=st
            )
        if st.disposable():
            del self._states[aid]
        return ev

    def _event(
        self,
        spec: PointSpec,
        kind: Kind,
        s: int,
        prev: int,
        new: int,
        *,
        value: float,
        thr: float,
        unit: str,
        ts: float,
        st: AlarmState,
        extra: dict[str, object] | None = None,
    ) -> AlarmEvent:
        slot = kind.slots[s]
        extra = dict(extra or {})
        if chattering(st, ts, spec.rules.chatter_count):
            extra["chattering"] = True
        if st.held > st.computed:
            extra["latched"] = True
        if prev == 0:
            st.since = ts
        st.published = new
        return make_event(
            spec,
            slot.direction,
            prev,
            new,
            value=value,
            threshold=thr,
            ts=ts,
            kind=slot.kind,
            suffix=slot.suffix,
            unit=unit,
            extra=extra,
        )

    def _resolve(self, alarm_id: str) -> tuple[int, Kind, int, int]:
        code, _, suffix = alarm_id.rpartition(":")
        i = self._by_code.get(code)
        found = self._suffix.get(suffix)
        if i is not None and found is not None:
            ki, s = found
            kind = self.kinds[ki]
            c = int(np.searchsorted(kind.points, i))
            if c < len(kind) and kind.points[c] == i:
                return ki, kind, s, c
        raise AlarmLookupError(f"no alarm '{alarm_id}' in this config")

    def _operator_event(
        self, alarm_id: str, action: str, by: str, ts: float, extra: dict[str, object]
    ) -> AlarmEvent:
        _ki, kind, s, c = self._resolve(alarm_id)
        spec, slot = kind.specs[c], kind.slots[s]
        st = self._states.get(alarm_id) or AlarmState()
        until = st.shelved_until
        assert action in ("ack", "shelve", "unshelve")
        zh, en = operator_texts(spec, slot.kind, action, by, until)  # type: ignore[arg-type]
        level = LEVELS[st.published]
        row = kind.row_for(s, st.published, c) if st.published else None
        return AlarmEvent(
            alarm_id=alarm_id,
            point=spec.code,
            device=spec.device,
            key=spec.key,
            direction=slot.direction,
            transition=action,  # type: ignore[arg-type]
            level=level,
            prev_level=level,
            value=float(self._value[spec.index]),
            threshold=math.nan if row is None else float(kind.rows.on[row, c]),
            unit=kind.unit_of_measure or spec.unit,
            ts=ts,
            text_zh=zh,
            text_en=en,
            kind=slot.kind,
            extra={k: v for k, v in {"by": by, **extra}.items() if v not in (None, "")},
        )

    def ack(self, alarm_id: str, by: str, ts: float, note: str = "") -> list[AlarmEvent]:
        """Acknowledge an active alarm: an `ack` event, then a clear if a latch held it."""
        st = self._states.get(alarm_id)
        if st is None or st.published == 0:
            self._resolve(alarm_id)  # unknown id → its own message
            raise AlarmLookupError(f"alarm '{alarm_id}' is not active")
        st.acked = True
        events = [self._operator_event(alarm_id, "ack", by, ts, {"note": note})]
        st.held = 0
        events += self._republish(alarm_id, st, ts)
        return events

    def shelve(
        self, alarm_id: str, until: float, by: str, ts: float, note: str = ""
    ) -> list[AlarmEvent]:
        """Suppress an alarm's transitions until `until` (epoch s)."""
        self._resolve(alarm_id)
        st = self._states.setdefault(alarm_id, AlarmState())
        if st.shelved_until is None:
            self._shelved += 1
        st.shelved_until = until
        return [
            self._operator_event(
                alarm_id, "shelve", by, ts, {"until": round(until * 1000), "note": note}
            )
        ]

    def unshelve(self, alarm_id: str, by: str, ts: float) -> list[AlarmEvent]:
        st = self._states.get(alarm_id)
        if st is None or st.shelved_until is None:
            self._resolve(alarm_id)
            raise AlarmLookupError(f"alarm '{alarm_id}' is not shelved")
        events = [self._operator_event(alarm_id, "unshelve", by, ts, {})]
        st.shelved_until = None
        self._shelved -= 1
        return events + self._republish(alarm_id, st, ts)

    def _republish(self, alarm_id: str, st: AlarmState, ts: float) -> list[AlarmEvent]:
        """After an operator action: publish the effective level if it differs."""
        out: list[AlarmEvent] = []
        eff = st.effective()
        if eff != st.published and st.shelved_until is None:
            _ki, kind, s, c = self._resolve(alarm_id)
            lvl = st.published if eff == 0 else eff
            row = kind.row_for(s, lvl, c)
            x = float(self._value[kind.specs[c].index])
            thr = math.nan if row is None else float(kind.rows.on[row, c])
            value, _, unit = kind.describe(row or 0, c, x, x)
            out.append(
                self._event(
                    kind.specs[c],
                    kind,
                    s,
                    st.published,
                    eff,
                    value=value,
                    thr=thr,
                    unit=unit,
                    ts=ts,
                    st=st,
                )
            )
        if st.disposable():
            self._states.pop(alarm_id, None)
        return out

    def _expire(self, now: float) -> list[AlarmEvent]:
        out: list[AlarmEvent] = []
        for aid, st in list(self._states.items()):
            if st.shelved_until is not None and st.shelved_until <= now:
                out += self.unshelve(aid, "", now)
        return out

    # -- inspection and persistence ---------------------------------------------------------

    def active(self) -> list[ActiveAlarm]:
        """Every alarm whose published level is not normal, in point order."""
        out: list[ActiveAlarm] = []
        for aid, st in self._states.items():
            level = LEVELS[st.published]
            if level is None:
                continue
            _ki, kind, s, c = self._resolve(aid)
            spec, slot = kind.specs[c], kind.slots[s]
            row = kind.row_for(s, st.published, c)
            out.append(
                ActiveAlarm(
                    alarm_id=aid,
                    point=spec.code,
                    device=spec.device,
                    key=spec.key,
                    kind=slot.kind,
                    direction=slot.direction,
                    level=level,
                    since=st.since,
                    value=float(self._value[spec.index]),
                    threshold=math.nan if row is None else float(kind.rows.on[row, c]),
                    unit=kind.unit_of_measure or spec.unit,
                    acked=st.acked,
                    shelved_until=st.shelved_until,
                )
            )
        out.sort(key=lambda a: (self._by_code[a.point], a.alarm_id))
        return out

    def snapshot(self) -> dict[str, Any]:
        """The alarm state worth keeping across a restart (JSON-ready)."""
        return {aid: st.to_json() for aid, st in self._states.items() if not st.idle()}

    def restore(self, saved: dict[str, Any]) -> list[str]:
        """Adopt a snapshot taken before a restart: alarms active then are active now (no new
        raise) and clear once their condition is seen normal. Returns the ids dropped because
        this config no longer has them."""
        dropped: list[str] = []
        for aid, d in saved.items():
            try:
                ki, kind, s, c = self._resolve(aid)
                st = AlarmState.from_json(d)
            except (AlarmLookupError, TypeError, ValueError):
                dropped.append(aid)
                continue
            row = kind.row_for(s, st.computed, c) if st.computed else None
            if row is None:
                st.computed = 0
            else:
                kind.set_active(row, c)
                self._level[ki][s, c] = st.computed
            if st.shelved_until is not None:
                self._shelved += 1
            if not st.idle():
                self._states[aid] = st
        return dropped

    # agent.service.reload's StatefulEngine protocol: the alarm state moves to the new engine.
    def export_state(self) -> dict[str, Any]:
        return self.snapshot()

    def import_state(self, state: dict[str, Any]) -> None:
        self.restore(state)


npt_int8 = np.ndarray[Any, np.dtype[np.int8]]
__all__ = ["ActiveAlarm", "AlarmLookupError", "RuleEngine", "transition_of"]
