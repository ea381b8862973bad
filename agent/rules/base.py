"""The rule-kind contract: a (rows x points) matrix of debounced detectors plus a measure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.core.model import Direction, PointSpec
from agent.rules.rows import BoolArray, Cols, FloatArray, IntArray, Rows, uniform

NAN = math.nan


@dataclass(frozen=True, slots=True)
class Slot:
    """One alarm of a point: its id suffix, its kind on the wire, and its side."""

    suffix: str  # alarm_id = f"{point code}:{suffix}"
    kind: str
    direction: Direction


def opt(v: float | None) -> float:
    return NAN if v is None else float(v)


class Kind:
    """A rule kind over the points that use it.

    Subclasses set `name`, `slots`, `row_level` (1 warning, 2 alarm, 3 critical), `row_slot`
    (index into `slots`), `row_gated` (rows that count only while the point's gate is on),
    build `rows` in __init__, and implement `measure`.

    The engine calls, once per frame and with the kind's selected columns:
    `measure(cols, x, t, dead)` updates the kind's own state and returns its measure ((L, k),
    or (1, k) shared by every row); `busy(cols, m, gate_on, gate_off)` names the columns whose
    detectors may change (a superset: never misses one); for those only,
    `rows_measure(cols, m, x)` gives the measure per row. All three are vectorized: no
    Python loop over points. `dead` marks readings of a unit that did not answer at all.
    `values` is the engine's latest reading of every point (by global index).
    """

    name = ""
    slots: tuple[Slot, ...] = ()
    row_level: tuple[int, ...] = ()
    row_slot: tuple[int, ...] = ()
    row_gated: tuple[bool, ...] = ()
    unit_of_measure = ""  # "" = the point's unit
    # False: ±Inf readings reach `measure` as NaN (missing); only sensor-quality kinds see them
    sees_nonfinite = False

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        self.specs = list(specs)
        self.values = np.full(0, NAN) if values is None else values
        # column c of every per-point array of the kind is global point points[c]: a kind's
        # state is as wide as the points that use it (the engine builds no kind nobody uses)
        self.points: IntArray = np.array([p.index for p in specs], dtype=np.intp)
        self.gate: IntArray = uniform(
            np.array([-1 if p.rules.when is None else p.rules.when for p in specs], dtype=np.intp)
        )
        # row_gate[r, c]: row r of column c counts only while c's gate is on
        min_level = np.array([p.rules.when_min_level for p in specs], dtype=np.int64)
        self.row_gate: BoolArray = (
            np.array(self.row_gated, dtype=bool).reshape(-1, 1)
            & (np.array(self.row_level, dtype=np.int64).reshape(-1, 1) >= min_level)
            & (self.gate >= 0)
        )
        self.has_gate = bool(self.row_gate.any())
        gated_any: BoolArray = np.logical_or.reduce(self.row_gate, axis=0)
        gated_all: BoolArray = np.logical_and.reduce(self.row_gate, axis=0)
        self.g_full: BoolArray = gated_all & gated_any
        self.g_part: BoolArray = gated_any & ~self.g_full
        self.all_full = bool(self.g_full.all())
        self.g_free: BoolArray = ~self.g_full
        self.any_part = bool(self.g_part.any())
        self.rows: Rows

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        raise NotImplementedError

    def rows_measure(self, cols: IntArray, m: FloatArray, x: FloatArray) -> FloatArray:
        """The measure per row for a few columns (default: `measure`'s result as is)."""
        return m

    def busy(
        self, cols: Cols, m: FloatArray, gate_on: BoolArray | None, gate_off: BoolArray | None
    ) -> BoolArray:
        """Columns where a detector may change: a timer runs, a current test holds, or a gate
        that is off meets an active gated detector (it is pushed to clear)."""
        r = self.rows
        b: BoolArray
        if m.shape[0] == 1:
            mm = m[0]
            b = mm >= r.hi[cols]
            b |= mm <= r.lo[cols]
        else:
            b = r.meets(cols, m)
        if self.has_gate and gate_on is not None and gate_off is not None:
            # a fully gated column's tests count only while its gate is on; while it is off,
            # an active detector is pushed to clear
            if self.all_full:
                b &= gate_on
                b |= gate_off & r.any_active[cols]
            else:
                full = self.g_full[cols]
                b &= gate_on | self.g_free[cols]
                b |= gate_off & full & r.any_active[cols]
            if self.any_part:
                b |= self.g_part[cols] & ~gate_on  # mixed columns: the exact path decides
        b |= r.pending[cols]
        return b

    def toggle(self, rows: IntArray, cols: IntArray) -> None:
        """Flip detectors (absolute columns); subclasses refresh what they derive from them."""
        self.rows.toggle(rows, cols)
        self.refresh(cols)  # duplicate columns are harmless

    def refresh(self, cols: IntArray) -> None:
        """Recompute per-column state derived from which detectors are on (default: none)."""

    def set_active(self, row: int, col: int) -> None:
        if not self.rows.is_on(row, col) and not math.isnan(self.rows.threshold(row, col)):
            self.toggle(np.array([row]), np.array([col]))

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        """(value, threshold, unit) reported in an event of detector (row, col)."""
        unit = self.unit_of_measure or self.specs[col].unit
        return m, self.rows.threshold(row, col), unit

    def slot_level(self, slot: int, col: int) -> int:
        """The level of one slot of one column: the highest active row of the slot."""
        lvl = 0
        for r, s in enumerate(self.row_slot):
            if s == slot and self.rows.is_on(r, col):
                lvl = max(lvl, self.row_level[r])
        return lvl

    def row_for(self, slot: int, level: int, col: int) -> int | None:
        """The enabled row of `slot` at `level` for column `col` (for clears and restores)."""
        for r, s in enumerate(self.row_slot):
            if (
                s == slot
                and self.row_level[r] == level
                and not math.isnan(self.rows.threshold(r, col))
            ):
                return r
        return None


def matrix(rows: Sequence[Sequence[float]]) -> FloatArray:
    """Per-row lists of per-point values → an (L, P) float array."""
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def abs_cols(cols: Cols, n: int) -> IntArray:
    """A column selection as absolute indices."""
    return np.arange(n)[cols] if isinstance(cols, slice) else cols
