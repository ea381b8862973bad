"""Sensor-quality kinds: stale (no good reading for `stale_after` s), frozen (the same reading
`frozen_polls` times in a row), out of range (outside the transmitter's span), 4-20 mA loop
fault (the span mapped to 4..20 mA: below 3.6 or above 21 mA; healthy again only inside NAMUR
NE43's measurement range, 3.8 to 20.5 mA). One slot each.

Stale stays silent while the point's unit does not answer at all (every reading of the unit
in the frame failed with COMM_FAIL): the poller's one comm_loss alarm per device covers it,
so a dead device raises one alarm, not one per point. A block that times out while the rest
of its unit answers still goes stale."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.core.model import PointSpec
from agent.rules.base import Kind, Slot, matrix
from agent.rules.rows import BoolArray, Cols, FloatArray, Rows, uniform

LOOP_LOW_MA, LOOP_HIGH_MA = 3.6, 21.0  # NAMUR NE43 failure levels
# NE43's measurement range ends 0.2 mA above the low and 0.5 mA below the high failure level:
# the loop measure is scaled per side so that -1 is exactly that edge (the clear level).
LOOP_LOW_BAND, LOOP_HIGH_BAND = 0.2, 0.5


class Quality(Kind):
    name = "quality"
    slots = (
        Slot("stale", "stale", "none"),
        Slot("frozen", "frozen", "none"),
        Slot("range", "range", "none"),
        Slot("loop", "loop", "none"),
    )
    row_level = (1, 1, 1, 2)
    row_slot = (0, 1, 2, 3)
    row_gated = (False, False, False, False)
    sees_nonfinite = True  # ±Inf: outside the span (range), never a good reading (stale)

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        nan = math.nan
        ranged = [q.range_min is not None and q.range_max is not None for q in r]
        on = matrix(
            [
                [nan if q.stale_after is None else q.stale_after for q in r],
                [nan if q.frozen_polls is None else float(q.frozen_polls) for q in r],
                [0.5 if q.range_min is not None or q.range_max is not None else nan for q in r],
                [1e-9 if q.loop_ma and ok else nan for q, ok in zip(r, ranged, strict=True)],
            ]
        )
        # stale clears with a good reading (age 0); frozen when the reading changes (a run of 1)
        off = np.stack((np.zeros(len(r)), np.full(len(r), 1.5), on[2], np.full(len(r), -1.0)))
        d = [p.rule for p in specs]
        delay_on = np.array([q.on_delay if q else 30.0 for q in d])
        delay_off = np.array([q.off_delay if q else 60.0 for q in d])
        zero = np.zeros(len(r))
        self.rows = Rows(
            np.ones((4, 1)),
            on,
            off,
            np.stack((zero, zero, delay_on, delay_on)),
            np.stack((zero, zero, delay_off, delay_off)),
        )
        n = len(specs)
        lo = np.array([-math.inf if q.range_min is None else q.range_min for q in r])
        hi = np.array([math.inf if q.range_max is None else q.range_max for q in r])
        self.lo, self.hi, self.span = uniform(lo), uniform(hi), uniform(hi - lo)
        self.last_good = np.full(n, np.nan)
        self.prev = np.full(n, np.nan)
        self.same = np.zeros(n)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        view = isinstance(cols, slice)
        last_good, prev, same = self.last_good[cols], self.prev[cols], self.same[cols]
        out = np.empty((4, x.shape[0]))
        stale, frozen, outside, loop = out
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(x)
            all_ok = bool(ok.all())
            if all_ok:
                last_good[...] = t
            else:
                np.copyto(last_good, t, where=ok | np.isnan(last_good))
            np.subtract(t, last_good, out=stale)
            if dead is not None:
                stale[dead] = np.nan  # the unit's comm_loss alarm covers it
            repeat = x == prev
            if all_ok:
                same += 1.0
                same[~repeat] = 0.0
                prev[...] = x
            else:
                np.copyto(same, np.where(repeat, same + 1.0, 0.0), where=ok)
                np.copyto(prev, x, where=ok)
            np.add(same, 1.0, out=frozen)
            lo, hi = self.lo[cols], self.hi[cols]
            np.less(x, lo, out=outside, casting="unsafe")
            outside[x > hi] = 1.0
            with np.errstate(divide="ignore"):
                ma = x - lo
                ma *= 16.0
                ma /= self.span[cols]
                ma += 4.0
            np.subtract(LOOP_LOW_MA, ma, out=loop)
            loop /= LOOP_LOW_BAND
            ma -= LOOP_HIGH_MA
            ma /= LOOP_HIGH_BAND
            np.maximum(loop, ma, out=loop)
            if not all_ok:
                out[1, ~ok] = np.nan
                out[2, np.isnan(x)] = np.nan  # ±Inf is outside any span: it counts
                out[3, ~ok] = np.nan
        if not view:
            self.last_good[cols], self.prev[cols], self.same[cols] = last_good, prev, same
        return out

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        spec = self.specs[col]
        if row == 0:
            return m, self.rows.threshold(row, col), "s"
        if row == 1:
            return m, self.rows.threshold(row, col), ""
        lo, hi = float(self.lo[col]), float(self.hi[col])
        if row == 2:
            return x, hi if x > hi else lo, spec.unit
        ma = 4.0 + 16.0 * (x - lo) / (hi - lo)
        return ma, LOOP_HIGH_MA if ma > LOOP_HIGH_MA else LOOP_LOW_MA, "mA"
