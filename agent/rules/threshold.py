"""Two-level high/low thresholds with hysteresis and on/off delays (the `threshold` kind)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.core.model import Direction, PointSpec
from agent.rules.base import Kind, Slot, matrix, opt
from agent.rules.rows import BoolArray, Cols, FloatArray, Rows


def band_limit(threshold: float, hysteresis_pct: float, direction: Direction) -> float:
    """The value a reading must get back to (inclusive) before an active level may clear."""
    band = abs(threshold) * hysteresis_pct / 100.0
    return threshold - band if direction == "high" else threshold + band


class Threshold(Kind):
    """Rows: high warning, high alarm, low warning, low alarm; slots high and low."""

    name = "threshold"
    slots = (Slot("high", "threshold", "high"), Slot("low", "threshold", "low"))
    row_level = (1, 2, 1, 2)
    row_slot = (0, 0, 1, 1)
    row_gated = (True, True, True, True)

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        rules = [p.rule for p in specs]
        on = matrix(
            [
                [opt(r.high_warning if r else None) for r in rules],
                [opt(r.high_alarm if r else None) for r in rules],
                [opt(r.low_warning if r else None) for r in rules],
                [opt(r.low_alarm if r else None) for r in rules],
            ]
        )
        hyst = np.array([r.hysteresis_pct if r else 0.0 for r in rules])
        band = np.abs(on) * hyst / 100.0
        sign = np.array([[1.0], [1.0], [-1.0], [-1.0]])
        off = on - sign * band
        on_delay = np.array([r.on_delay if r else 0.0 for r in rules])
        off_delay = np.array([r.off_delay if r else 0.0 for r in rules])
        self.rows = Rows(sign, on, off, on_delay, off_delay)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        return x[None, :]

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        return x, self.rows.threshold(row, col), self.specs[col].unit


class Difference(Kind):
    """This reading minus the latest reading of another point (`minus`): outlet - inlet
    temperature > 15 K is a heat source inside the collector. Rows: warning, alarm (slot
    `diff`); a negative threshold alarms on a difference below it. Hysteresis and delays are
    the point's threshold settings. Unknown (NaN) while either reading is missing."""

    name = "difference"
    slots = (Slot("diff", "difference", "high"),)
    row_level = (1, 2)
    row_slot = (0, 0)
    row_gated = (True, True)

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        on = matrix([[opt(q.diff_warning) for q in r], [opt(q.diff_alarm) for q in r]])
        sign = np.where(on < 0, -1.0, 1.0)
        sign[1] = np.where(np.isnan(on[1]), sign[0], sign[1])
        d = [p.rule for p in specs]
        hyst = np.array([x.hysteresis_pct if x else 2.0 for x in d])
        off = on - sign * (np.abs(on) * hyst / 100.0)
        self.rows = Rows(
            sign,
            on,
            off,
            np.array([x.on_delay if x else 30.0 for x in d]),
            np.array([x.off_delay if x else 60.0 for x in d]),
        )
        self.minus = np.array([-1 if q.minus is None else q.minus for q in r], dtype=np.intp)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        out: FloatArray = (x - self.values[self.minus[cols]])[None, :]
        return out
