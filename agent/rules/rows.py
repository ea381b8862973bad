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

import math
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
Cols = slice | IntArray  # a selection of columns: a view (slice) or a gather (indices)
T = TypeVar("T", bound="np.generic[Any]")


def uniform(a: npt.NDArray[T]) -> npt.NDArray[T]:
    """A constant per-point array (..., P), read-only: when each row holds one value at every
    point (bit for bit), a broadcast view of that value (a setting every point shares costs
    one value, not P); else `a` itself."""
    if a.shape[-1] < 2:
        return a
    bits = a.view(np.int64) if a.dtype == np.float64 else a  # -0.0 and NaN stay distinct
    if not bool((bits == bits[..., :1]).all()):
        return a
    return np.broadcast_to(a[..., :1].copy(), a.shape)  # the copy lets `a` go


def _broadcast(a: FloatArray, shape: tuple[int, int], keep: IntArray | None) -> FloatArray:
    """`a` as a read-only float64 view of shape (L, P) cut to the rows `keep` (None: all): a
    value per row or per point, or one that every point shares, is not copied."""
    a = np.asarray(a, dtype=np.float64)
    if keep is None:
        return uniform(np.broadcast_to(a, shape))
    if a.ndim == 2 and a.shape[0] == shape[0]:
        a = a[keep]
    return uniform(np.broadcast_to(a, (keep.shape[0], shape[1])))


class Rows:
    """(L, P) debounced detectors. `step` advances selected columns; `toggle` applies fires.

    Only the rows enabled for some point are stored: a row whose threshold is NaN at every
    point never fires (a quality kind with stale only holds one row, not four). Every method
    takes and returns rows of the full L; `threshold`, `is_on` and `active_rows` read them."""

    def __init__(
        self,
        sign: FloatArray,
        on: FloatArray,
        off: FloatArray,
        on_delay: FloatArray,
        off_delay: FloatArray,
    ) -> None:
        n_rows, n = on.shape
        shape = (n_rows, n)
        kept = np.flatnonzero(~np.isnan(on).all(axis=1))
        # None: every row is stored; else the stored rows, and each row's place (-1: none)
        self._keep: IntArray | None = None if kept.shape[0] == n_rows else kept
        self._local: IntArray = np.full(n_rows, -1, dtype=np.intp)
        self._local[kept] = np.arange(kept.shape[0])
        self.sign = _broadcast(sign, shape, None)  # the full L: the engine's gates use it
        # constants: sign and delays stay broadcast views of what the kind passed (often one
        # value per row or per point); the off test's level is derived in `toggle`
        self._sign = _broadcast(sign, shape, self._keep)
        self._on = _broadcast(on, shape, self._keep)  # never written: no copy when all rows stay
        self._off = _broadcast(off, shape, self._keep)
        self._on_delay = _broadcast(on_delay, shape, self._keep)
        self._off_delay = _broadcast(off_delay, shape, self._keep)
        self._active = np.zeros(self._on.shape, dtype=bool)
        self.gain = np.array(self._sign)  # the current test: gain * m >= level
        self.level = self._sign * self._on
        self._delay = np.array(self._on_delay)  # the current test's delay (per frame: no where)
        self._since = np.full(self._on.shape, np.nan)
        self.pending = np.zeros(n, dtype=bool)  # any timer running in the column
        self.any_active = np.zeros(n, dtype=bool)
        self.hi = np.full(n, np.inf)  # a shared measure m with lo < m < hi meets no test
        self.lo = np.full(n, -np.inf)
        self._summarize(np.arange(n))

    def threshold(self, row: int, col: int) -> float:
        """The on-threshold of detector (row, col) (NaN: disabled)."""
        r = int(self._local[row])
        return math.nan if r < 0 else float(self._on[r, col])

    def is_on(self, row: int, col: int) -> bool:
        r = int(self._local[row])
        return r >= 0 and bool(self._active[r, col])

    def active_rows(self, cols: Cols) -> BoolArray:
        """Which detectors are on, (L, k) for columns `cols`."""
        a = self._active[:, cols]
        if self._keep is None:
            return a
        out = np.zeros((self._local.shape[0], a.shape[1]), dtype=bool)
        out[self._keep] = a
        return out

    def active_row(self, row: int, cols: Cols) -> BoolArray:
        """Which detectors of one row are on, for columns `cols`."""
        r = int(self._local[row])
        if r < 0:
            return np.zeros(self._since[0, cols].shape, dtype=bool)
        out: BoolArray = self._active[r, cols]
        return out

    def _rows(self, m: FloatArray) -> FloatArray:
        """A measure ((L, k) or (1, k)) cut to the stored rows."""
        return m if self._keep is None or m.shape[0] == 1 else m[self._keep]

    def _summarize(self, cols: IntArray) -> None:
        gain, level = self.gain[:, cols], self.level[:, cols]
        enabled = ~np.isnan(level)
        self.hi[cols] = np.where(enabled & (gain > 0), level, np.inf).min(axis=0, initial=np.inf)
        self.lo[cols] = np.where(enabled & (gain < 0), -level, -np.inf).max(axis=0, initial=-np.inf)
        self.any_active[cols] = self._active[:, cols].any(axis=0)

    def meets(self, cols: Cols, m: FloatArray) -> BoolArray:
        """Per column: does any detector's current test hold for measure m ((L, k))?"""
        cond: BoolArray = self.gain[:, cols] * self._rows(m) >= self.level[:, cols]
        out: BoolArray = np.logical_or.reduce(cond, axis=0)
        return out

    def step(self, cols: Cols, m: FloatArray, t: FloatArray) -> BoolArray:
        """Advance columns `cols` with measures `m` ((L, k) or (1, k)) at times `t` (k,).
        Returns the (L, k) mask of detectors that fired (turned on or off); call `toggle`."""
        since = self._since[:, cols]
        cond = self.gain[:, cols] * self._rows(m) >= self.level[:, cols]  # False for NaN
        restart = cond & ~(since <= t)
        since = np.where(cond, np.where(restart, t, since), np.nan)
        fire = cond & (t - since >= self._delay[:, cols])
        if fire.any():
            since[fire] = np.nan
        self._since[:, cols] = since
        self.pending[cols] = ~np.isnan(since).all(axis=0)
        if self._keep is None:
            out: BoolArray = fire
            return out
        full = np.zeros((self._local.shape[0], fire.shape[1]), dtype=bool)
        full[self._keep] = fire
        return full

    def toggle(self, rows: IntArray, cols: IntArray) -> None:
        """Flip the detectors at (rows, cols) (absolute column indices) and swap their tests."""
        r = rows if self._keep is None else self._local[rows]  # a fired row is stored
        now_on = ~self._active[r, cols]
        self._active[r, cols] = now_on
        s = self._sign[r, cols]
        self.gain[r, cols] = np.where(now_on, -s, s)
        self.level[r, cols] = np.where(now_on, -s * self._off[r, cols], s * self._on[r, cols])
        self._delay[r, cols] = np.where(now_on, self._off_delay[r, cols], self._on_delay[r, cols])
        self._since[r, cols] = np.nan
        self._summarize(cols)  # duplicates write the same values

    def set_active(self, row: int, col: int) -> None:
        """Restore one detector as on (state from before a restart)."""
        if not self.is_on(row, col) and not math.isnan(self.threshold(row, col)):
            self.toggle(np.array([row]), np.array([col]))
