"""Debounced detector rows: the on/off-delay state machine shared by every rule kind.

A rule kind is a matrix of detectors, L rows (one per level or condition) by P points. Each
detector turns on when its measure is at/beyond its on-threshold continuously for `on_delay`
seconds, and off when it is back at/inside its off-threshold continuously for `off_delay`
seconds. Time is each reading's source ts. A NaN measure meets neither test: pending timers
restart and an active detector stays on. A ts earlier than a pending timer's start (a clock
step back) restarts the timer. A NaN threshold disables a detector.

Signed space: with s = +1 (alarm above) or -1 (alarm below), the on-test is s*m >= s*on and
the off-test s*m <= s*off, i.e. -s*m >= -s*off. So each detector's current test is one
comparison `gain * m >= level`, and firing swaps (gain, level, delay).

Per point, `Rows` also keeps what lets the engine skip a point in O(1): whether any detector
has a pending timer, whether any is on, and the band (lo, hi) of a shared measure inside
which no detector's current test holds. A point with nothing pending and its measure inside
the band (or NaN) cannot change state this frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
Cols = slice | IntArray  # a selection of columns: a view (slice) or a gather (indices)


def _broadcast(a: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """`a` as a read-only float64 (L, P) view: a per-row or per-point value is not copied."""
    return np.broadcast_to(np.asarray(a, dtype=np.float64), shape)


class Rows:
    """(L, P) debounced detectors. `step` advances selected columns; `toggle` applies fires."""

    def __init__(
        self,
        sign: FloatArray,
        on: FloatArray,
        off: FloatArray,
        on_delay: FloatArray,
        off_delay: FloatArray,
    ) -> None:
        shape = on.shape
        # constants: sign and delays stay broadcast views of what the kind passed (often one
        # value per row or per point); the levels of the on/off tests are derived in `toggle`
        self.sign = _broadcast(sign, shape)
        self.on = np.asarray(on, dtype=np.float64)  # never written: the caller's array
        self.off = np.asarray(off, dtype=np.float64)
        self._on_delay = _broadcast(on_delay, shape)
        self._off_delay = _broadcast(off_delay, shape)
        self.active = np.zeros(shape, dtype=bool)
        self.gain = np.array(self.sign)  # the current test: gain * m >= level
        self.level = self.sign * self.on
        self._since = np.full(shape, np.nan)
        n = shape[1]
        self.pending = np.zeros(n, dtype=bool)  # any timer running in the column
        self.any_active = np.zeros(n, dtype=bool)
        self.hi = np.full(n, np.inf)  # a shared measure m with lo < m < hi meets no test
        self.lo = np.full(n, -np.inf)
        self._summarize(np.arange(n))

    def _summarize(self, cols: IntArray) -> None:
        gain, level = self.gain[:, cols], self.level[:, cols]
        enabled = ~np.isnan(level)
        self.hi[cols] = np.where(enabled & (gain > 0), level, np.inf).min(axis=0, initial=np.inf)
        self.lo[cols] = np.where(enabled & (gain < 0), -level, -np.inf).max(axis=0, initial=-np.inf)
        self.any_active[cols] = self.active[:, cols].any(axis=0)

    def meets(self, cols: Cols, m: FloatArray) -> BoolArray:
        """Per column: does any detector's current test hold for measure m ((L, k))?"""
        cond: BoolArray = self.gain[:, cols] * m >= self.level[:, cols]
        out: BoolArray = np.logical_or.reduce(cond, axis=0)
        return out

    def step(self, cols: Cols, m: FloatArray, t: FloatArray) -> BoolArray:
        """Advance columns `cols` with measures `m` ((L, k) or (1, k)) at times `t` (k,).
        Returns the (L, k) mask of detectors that fired (turned on or off); call `toggle`."""
        since = self._since[:, cols]
        cond = self.gain[:, cols] * m >= self.level[:, cols]  # False for NaN
        restart = cond & ~(since <= t)
        since = np.where(cond, np.where(restart, t, since), np.nan)
        delay = np.where(self.active[:, cols], self._off_delay[:, cols], self._on_delay[:, cols])
        fire = cond & (t - since >= delay)
        if fire.any():
            since[fire] = np.nan
        self._since[:, cols] = since
        self.pending[cols] = ~np.isnan(since).all(axis=0)
        out: BoolArray = fire
        return out

    def toggle(self, rows: IntArray, cols: IntArray) -> None:
        """Flip the detectors at (rows, cols) (absolute column indices) and swap their tests."""
        now_on = ~self.active[rows, cols]
        self.active[rows, cols] = now_on
        s = self.sign[rows, cols]
        self.gain[rows, cols] = np.where(now_on, -s, s)
        self.level[rows, cols] = np.where(
            now_on, -s * self.off[rows, cols], s * self.on[rows, cols]
        )
        self._since[rows, cols] = np.nan
        self._summarize(cols)  # duplicates write the same values

    def set_active(self, row: int, col: int) -> None:
        """Restore one detector as on (state from before a restart)."""
        if not self.active[row, col] and not np.isnan(self.on[row, col]):
            self.toggle(np.array([row]), np.array([col]))
