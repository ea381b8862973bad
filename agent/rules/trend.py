"""Trend kinds: `rate` (least-squares slope, exponentially weighted) and `deviation` (from a
slow EWMA baseline). Both keep O(1) state per point and cost O(points) per frame.

The updates run in place on the state arrays (views when the frame's columns are a run) and
patch afterwards the few columns with a missing reading or a restart, so the common frame
(every reading good) allocates little. tests/oracles/rules_reference.py computes the same
measures directly (the weighted least-squares sums over the kept readings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.core.model import PointSpec
from agent.rules.base import Kind, Slot, matrix, opt
from agent.rules.rows import BoolArray, Cols, FloatArray, Rows


def _signs(on: FloatArray) -> FloatArray:
    return np.where(on < 0, -1.0, 1.0)


def _advance_sums(s: FloatArray, c: FloatArray, decay: FloatArray, x: FloatArray) -> None:
    """In place on the (5, k) sums (w, t, x, tt, tx): shift the origin by c to the new
    sample's time, decay, add the sample at relative time 0."""
    w, st, sx, stt, stx = s  # row views
    tmp = 2 * c
    tmp *= st
    stt -= tmp
    np.multiply(c, c, out=tmp)
    tmp *= w
    stt += tmp
    stt *= decay
    np.multiply(c, sx, out=tmp)
    stx -= tmp
    stx *= decay
    np.multiply(c, w, out=tmp)
    st -= tmp
    st *= decay
    w *= decay
    w += 1.0
    sx *= decay
    sx += x


class Rate(Kind):
    """Slope of the readings, least squares with weights exp(-age / rate_window).

    Sums are kept relative to the newest sample's time (shifted each update, never squaring
    epoch seconds) and decayed by exp(-dt / window), so irregular polling is handled and
    nothing drifts. At least 3 readings spanning a quarter of the window are needed; a clock
    step back restarts the fit.
    Rows: warning, alarm. It clears when the slope is back under half the threshold.
    """

    name = "rate"
    slots = (Slot("rate", "rate", "high"),)
    row_level = (1, 2)
    row_slot = (0, 0)
    row_gated = (True, True)

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        on = matrix([[opt(q.rate_warning) for q in r], [opt(q.rate_alarm) for q in r]])
        sign = _signs(on)
        sign[1] = np.where(np.isnan(on[1]), sign[0], sign[1])
        off = on * 0.5
        hold = np.array([q.rate_hold for q in r])
        off_delay = np.array([p.rule.off_delay if p.rule else 60.0 for p in specs])
        self.rows = Rows(sign, on, off, hold, off_delay)
        n = len(specs)
        self.tau = np.array([q.rate_window for q in r])
        self.min_span = self.tau * 0.25
        self.per = np.array([q.rate_per for q in r])
        self.relative = np.array([q.rate_relative for q in r])
        self.any_relative = bool(self.relative.any())
        self.sums = np.zeros((5, n))  # w, t, x, tt, tx relative to `last`
        self.count = np.zeros(n)
        self.last = np.full(n, np.nan)
        self.start = np.full(n, np.nan)  # first reading of the current fit

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        view = isinstance(cols, slice)
        s, count = self.sums[:, cols], self.count[cols]
        last, start = self.last[cols], self.start[cols]
        with np.errstate(invalid="ignore", over="ignore"):
            c = t - last
            good = c >= 0  # False for the first reading and a clock step back: start over
            good &= ~np.isnan(x)  # and for a missing reading: keep the state
            patch = None if good.all() else np.flatnonzero(~good)
            if patch is not None:
                saved = (s[:, patch], count[patch], last[patch], start[patch])
            _advance_sums(s, c, np.exp(-c / self.tau[cols]), x)
            count += 1.0
            last[...] = t
            ok = None
            if patch is not None:
                ok = ~np.isnan(x)
                s[:, patch], count[patch], last[patch], start[patch] = saved
                fresh = patch[ok[patch]]
                s[:, fresh] = np.array([1.0, 0.0, 0.0, 0.0, 0.0])[:, None]
                s[2, fresh] = x[fresh]
                count[fresh] = 1.0
                last[fresh] = t[fresh]
                start[fresh] = t[fresh]
            if not view:
                self.sums[:, cols], self.count[cols] = s, count
                self.last[cols], self.start[cols] = last, start
            w, st, sx, stt, stx = s
            den = w * stt - st * st
            with np.errstate(divide="ignore"):
                slope = (w * stx - st * sx) / den * self.per[cols]
                if self.any_relative:
                    rel = self.relative[cols]
                    slope = np.where(rel, slope / np.abs(sx / w) * 100.0, slope)
            # trusted once the fit spans a quarter of the window (a sawtooth averages out)
            trusted = t - start >= self.min_span[cols]
            trusted &= count >= 3
            trusted &= den > 1e-12 * w * w
            if ok is not None:
                trusted &= ok
            return np.where(trusted, slope, np.nan)[None, :]

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        q = self.specs[col].rules
        per = {60.0: "min", 3600.0: "h", 86400.0: "day", 1.0: "s"}.get(
            q.rate_per, f"{q.rate_per:g}s"
        )
        unit = f"%/{per}" if q.rate_relative else f"{self.specs[col].unit}/{per}"
        return m, self.rows.threshold(row, col), unit


class Deviation(Kind):
    """Deviation from an EWMA baseline (time constant `baseline_tau`), measured before the
    reading joins the baseline: percent of the baseline, or the point's unit when
    `deviation_absolute` (CO above its background). Rows: warning, alarm (negative =
    below); the warning's on-delay is `deviation_hold` when set."""

    name = "deviation"
    slots = (Slot("deviation", "deviation", "none"),)
    row_level = (1, 2)
    row_slot = (0, 0)
    row_gated = (True, True)
    unit_of_measure = "%"

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        on = matrix([[opt(q.deviation_warning) for q in r], [opt(q.deviation_alarm) for q in r]])
        sign = _signs(on)
        sign[1] = np.where(np.isnan(on[1]), sign[0], sign[1])
        d = [p.rule for p in specs]
        on_delay = np.array([x.on_delay if x else 30.0 for x in d])
        hold = [
            on_delay[i] if q.deviation_hold is None else q.deviation_hold for i, q in enumerate(r)
        ]
        self.rows = Rows(
            sign,
            on,
            on * 0.5,
            np.stack((np.array(hold, dtype=np.float64), on_delay)),
            np.array([x.off_delay if x else 60.0 for x in d]),
        )
        n = len(specs)
        self.tau = np.array([q.baseline_tau for q in r])
        self.absolute = np.array([q.deviation_absolute for q in r])
        self.any_absolute = bool(self.absolute.any())
        self.all_absolute = bool(self.absolute.all())
        self.base = np.full(n, np.nan)
        self.last = np.full(n, np.nan)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        base, last = self.base[cols], self.last[cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = x - base
            if self.all_absolute:
                m = d.copy()
            else:
                m = d / np.abs(base)
                m *= 100.0
                if self.any_absolute:
                    m = np.where(self.absolute[cols], d, m)
            missing = np.isnan(d)
            patch = np.flatnonzero(missing) if missing.any() else None
            if patch is not None:  # a missing reading keeps the state; the first sets it
                saved = (base[patch], last[patch])
            alpha = t - last
            np.maximum(alpha, 0.0, out=alpha)
            np.negative(alpha, out=alpha)
            alpha /= self.tau[cols]
            np.expm1(alpha, out=alpha)
            np.negative(alpha, out=alpha)
            alpha *= d
            base += alpha
            last[...] = t
            if patch is not None:
                b0, l0 = saved
                xp, ok = x[patch], ~np.isnan(x[patch])
                base[patch] = np.where(ok, np.where(np.isnan(b0), xp, b0), b0)
                last[patch] = np.where(ok, t[patch], l0)
        if not isinstance(cols, slice):
            self.base[cols], self.last[cols] = base, last
        out: FloatArray = m[None, :]
        return out

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        unit = self.specs[col].unit if self.absolute[col] else "%"
        return m, self.rows.threshold(row, col), unit
