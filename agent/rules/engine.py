"""RuleEngine: every registered rule kind (agent.rules.registry) over every point, one
vectorized step per frame; the alarm lifecycle and operator actions are in `alarms`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

import agent.rules.builtin  # noqa: F401  (registers the built-in kinds)
from agent.core.model import AlarmEvent, Frame, PointSpec
from agent.core.model import Quality as Q
from agent.rules import registry
from agent.rules.alarms import ActiveAlarm, AlarmBook, AlarmLookupError, Int8Array
from agent.rules.base import Kind
from agent.rules.lifecycle import AlarmState
from agent.rules.rows import BoolArray, Cols, FloatArray, IntArray
from agent.rules.texts import transition_of

_COMM_FAIL = np.uint8(Q.COMM_FAIL)


class RuleEngine(AlarmBook):
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
        self._level: list[Int8Array] = []
        ordered = sorted(points, key=lambda q: q.index)
        for entry in registry.kinds():  # registration order: built-ins first
            specs = [p for p in ordered if entry.used_by(p)]
            if specs:
                kind = entry.evaluator(specs, self._value)
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

    def latest(self, index: int) -> float:
        """The latest reading of point `index` (NaN: none, or the last read failed)."""
        return float(self._value[index])

    def step(self, frame: Frame) -> list[AlarmEvent]:
        """Advance the points in `frame` (unique indices); return the published changes.

        Each kind measures every column of the frame (its own state must follow every
        reading), then asks which columns may change a detector (`Kind.busy`); only those few
        go through the debounce, the gates and the events."""
        idx, raw, t = frame.index, frame.value, frame.ts
        k = idx.shape[0]
        if k == 0:
            return []
        # ±Inf (a BAD_VALUE reading) never reaches a value rule: they see it as missing (NaN),
        # like a failed read; only the sensor-quality kinds see it as it came.
        finite = np.isfinite(raw)
        x = raw if bool(finite.all()) else np.where(finite, raw, np.nan)
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
                xs, ts = (raw if kind.sees_nonfinite else x)[fpos], t[fpos]
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


__all__ = ["ActiveAlarm", "AlarmLookupError", "RuleEngine", "transition_of"]
