"""Discrete-state kinds: `state` (values that alarm at once or after `state_delay`) and
`idle` (values held `idle_delay` s while the gate is on: air-lock stopped while the
collector runs, fan stopped while the producers run)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.core.model import PointSpec
from agent.core.rulespec import MAX_STATE
from agent.rules.base import Kind, Slot, matrix
from agent.rules.rows import BoolArray, Cols, FloatArray, IntArray, Rows

Int64Array = npt.NDArray[np.int64]
ALL_STATES = (1 << (MAX_STATE + 1)) - 1  # every value a state rule can name


def _mask(values: tuple[int, ...]) -> float:
    return float(sum(1 << v for v in set(values))) if values else math.nan


class State(Kind):
    """Rows: warning, alarm, critical (slot `state`, ungated) and idle (slot `idle`, gated).
    The measure of a row is 1 when the reading is one of the row's values, else 0; a reading
    that is not a small non-negative integer is NaN (holds the state).

    A point is busy when its reading is one of the values that meet a current test: a
    row's values while it is off, every other value while it is on (`trigger`, a bit mask
    per point, for the ungated rows and for the idle row)."""

    name = "state"
    slots = (Slot("state", "state", "none"), Slot("idle", "idle", "none"))
    row_level = (1, 2, 3, 2)
    row_slot = (0, 0, 0, 1)
    row_gated = (False, False, False, True)
    unit_of_measure = ""

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        masks = matrix(
            [
                [_mask(q.state_warning) for q in r],
                [_mask(q.state_alarm) for q in r],
                [_mask(q.state_critical) for q in r],
                [_mask(q.idle_states) if q.when is not None else math.nan for q in r],
            ]
        )
        self.masks = np.nan_to_num(masks, nan=0.0).astype(np.int64)
        self.enabled = ~np.isnan(masks)
        on = np.where(np.isnan(masks), np.nan, 0.5)
        # no threshold rule: DOMAIN.md's default 60 s off-delay, as every other kind
        off_delay = np.array([p.rule.off_delay if p.rule else 60.0 for p in specs])
        on_delay = matrix(
            [
                [q.state_delay for q in r],
                [q.state_delay for q in r],
                [q.state_delay for q in r],
                [q.idle_delay for q in r],
            ]
        )
        self.rows = Rows(np.ones((4, 1)), on, on, on_delay, off_delay)
        n = len(specs)
        self.trigger: Int64Array = np.zeros(n, dtype=np.int64)  # ungated rows
        self.trigger_idle: Int64Array = np.zeros(n, dtype=np.int64)
        self.refresh(np.arange(n))

    def refresh(self, cols: IntArray) -> None:
        masks, enabled = self.masks[:, cols], self.enabled[:, cols]
        trig = np.where(self.rows.active_rows(cols), ~masks & ALL_STATES, masks)
        trig = np.where(enabled, trig, 0)
        self.trigger[cols] = np.bitwise_or.reduce(trig[:3], axis=0)
        self.trigger_idle[cols] = trig[3]

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        return x[None, :]

    @staticmethod
    def _valid(x: FloatArray) -> tuple[BoolArray, Int64Array]:
        with np.errstate(invalid="ignore"):
            valid = (x >= 0) & (x <= MAX_STATE)
            valid &= np.floor(x) == x
        xi: Int64Array = np.where(valid, x, 0.0).astype(np.int64)
        return valid, xi

    def busy(
        self, cols: Cols, m: FloatArray, gate_on: BoolArray | None, gate_off: BoolArray | None
    ) -> BoolArray:
        valid, xi = self._valid(m[0])
        trig = self.trigger[cols]
        if self.has_gate and gate_on is not None and gate_off is not None:
            trig = trig | np.where(gate_on, self.trigger_idle[cols], 0)
        b: BoolArray = ((trig >> xi) & 1).astype(bool)
        b &= valid
        if self.has_gate and gate_off is not None:
            b |= gate_off & self.rows.active_row(3, cols)
        b |= self.rows.pending[cols]
        return b

    def rows_measure(self, cols: IntArray, m: FloatArray, x: FloatArray) -> FloatArray:
        valid, xi = self._valid(x)
        bits = (self.masks[:, cols] >> xi) & 1
        return np.where(valid, bits.astype(np.float64), np.nan)

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        return x, x, self.specs[col].unit
