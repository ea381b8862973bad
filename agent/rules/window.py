"""Window kinds: `drop` (percent fallen from the window's highest reading) and `count`
(events of a cumulative counter within a sliding window, wrap handled).

Both keep BUCKETS sub-windows per point (bucket width = window / BUCKETS, aligned on the
epoch), so the window edge is resolved to one bucket width. While a point stays in the same
bucket (most frames), its window aggregate is the cached aggregate of the other live buckets
combined with the current bucket's: O(1) per point. Only a point entering a new bucket
recomputes over its BUCKETS sub-windows. A reading stamped in an earlier bucket than the
point's previous one (the clock stepped back) empties the point's window first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.core.model import PointSpec
from agent.rules.base import Kind, Slot, abs_cols, matrix, opt
from agent.rules.rows import BoolArray, Cols, FloatArray, IntArray, Rows

BUCKETS = 10


class _Buckets:
    """Per point, BUCKETS (bucket id, aggregate) pairs: max per bucket and over the window,
    or (`first_wins`) each bucket's first value and the min over the window.

    The ring holds every bucket but the head (the bucket of the point's latest frame), whose
    value is `head_val` (`fill` until written); `rest` is the aggregate of the live buckets
    other than a written head.
    """

    def __init__(self, width: FloatArray, fill: float, *, first_wins: bool) -> None:
        n = width.shape[0]
        self.width = width
        self.fill = fill
        self.first_wins = first_wins
        self.reduce = np.minimum if first_wins else np.maximum
        self.ids = np.full((BUCKETS, n), -np.inf)
        self.vals = np.full((BUCKETS, n), fill)
        self.head_bid = np.full(n, np.nan)
        self.head_pos = np.zeros(n, dtype=np.intp)
        self.head_val = np.full(n, fill)
        self.written = np.zeros(n, dtype=bool)
        self.rest = np.full(n, fill)

    def add(self, cols: Cols, n: int, t: FloatArray, v: FloatArray, ok: BoolArray) -> FloatArray:
        """Put v (where ok) into the current bucket; return the window aggregate (incl. v).
        Without `first_wins`, v must be NaN where not ok."""
        bid = np.floor(t / self.width[cols])
        back = bid < self.head_bid[cols]  # a clock step back empties the window
        if back.any():
            self._forget(abs_cols(cols, n)[back])
        fast = bid == self.head_bid[cols]
        fast &= self.written[cols] | ~ok  # an unwritten head about to be written: slow path
        if not fast.all():
            if isinstance(cols, slice) and not fast.any():  # all enter a new bucket at once
                self._slow(cols, abs_cols(cols, n), bid, v, ok)
            else:
                slow = np.flatnonzero(~fast)
                sc = abs_cols(cols, n)[slow]
                self._slow(sc, sc, bid[slow], v[slow], ok[slow])
        head = self.head_val[cols]
        if not self.first_wins:
            np.fmax(head, v, out=head)  # NaN (not ok) leaves it
            if not isinstance(cols, slice):
                self.head_val[cols] = head
        agg: FloatArray = self.reduce(self.rest[cols], head)
        return agg

    def _forget(self, c: IntArray) -> None:
        self.ids[:, c] = -np.inf
        self.vals[:, c] = self.fill
        self.head_bid[c] = np.nan
        self.head_val[c] = self.fill
        self.written[c] = False
        self.rest[c] = self.fill

    def _slow(self, sel: Cols, c: IntArray, b: FloatArray, v: FloatArray, ok: BoolArray) -> None:
        """The bucket ring itself for columns `sel` (absolute indices `c`): flush the head,
        write the reading, recompute the aggregate of the other live buckets."""
        p = self.ids.shape[1]
        wr = self.written[sel]
        head = self.head_pos[sel] * p + c
        np.put(self.vals, head[wr], self.head_val[sel][wr])
        pos = (b % BUCKETS).astype(np.intp)
        flat = pos * p + c
        cur_id, cur = self.ids.take(flat), self.vals.take(flat)
        same = cur_id == b
        new = np.where(same, cur if self.first_wins else np.fmax(cur, v), v)
        w_ids = np.where(ok, b, cur_id)
        w_vals = np.where(ok, new, cur)
        np.put(self.ids, flat, w_ids)
        np.put(self.vals, flat, w_vals)
        live = self.ids[:, sel] > b - BUCKETS
        written = w_ids == b
        r = np.flatnonzero(written)
        live[pos[r], r] = False
        self.rest[sel] = self.reduce.reduce(np.where(live, self.vals[:, sel], self.fill), axis=0)
        self.head_bid[sel] = b
        self.head_pos[sel] = pos
        self.written[sel] = written
        self.head_val[sel] = np.where(written, w_vals, self.fill)


class Drop(Kind):
    """Percent fallen from the highest reading of the last `drop_window` s. Rows: warning,
    alarm; clears under half the threshold."""

    name = "drop"
    slots = (Slot("drop", "drop", "low"),)
    row_level = (1, 2)
    row_slot = (0, 0)
    row_gated = (True, True)
    unit_of_measure = "%"

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        on = matrix([[opt(q.drop_warning) for q in r], [opt(q.drop_alarm) for q in r]])
        d = [p.rule for p in specs]
        self.rows = Rows(
            np.ones((2, 1)),
            on,
            on * 0.5,
            np.array([q.on_delay if q else 30.0 for q in d]),
            np.array([q.off_delay if q else 60.0 for q in d]),
        )
        width = np.array([q.drop_window for q in r]) / BUCKETS
        self.buckets = _Buckets(width, -np.inf, first_wins=False)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        ok = ~np.isnan(x)
        top = self.buckets.add(cols, len(self), t, x, ok)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = (top - x) / np.abs(top) * 100.0
            ok &= top > 0
        return np.where(ok, m, np.nan)[None, :]


class Count(Kind):
    """Events counted by a cumulative counter within the last `count_window` s.

    The counter is unwrapped: a decrease by wrapping at 2**count_bits counts the events
    across the wrap; a decrease that would mean more than half the range of events is a
    counter reset (device restart) and counts nothing. Rows: warning, alarm (>= threshold,
    no on-delay); clears when the count is below the threshold for off_delay.
    """

    name = "count"
    slots = (Slot("count", "count", "high"),)
    row_level = (1, 2)
    row_slot = (0, 0)
    row_gated = (False, False)
    unit_of_measure = ""

    def __init__(self, specs: Sequence[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        r = [p.rules for p in specs]
        on = matrix([[opt(q.count_warning) for q in r], [opt(q.count_alarm) for q in r]])
        d = [p.rule for p in specs]
        self.rows = Rows(
            np.ones((2, 1)),
            on,
            np.nextafter(on, -np.inf),  # clears below the threshold: m <= the next float down
            np.zeros(len(specs)),
            np.array([q.off_delay if q else 60.0 for q in d]),
        )
        n = len(specs)
        self.modulus = np.array([2.0**q.count_bits for q in r])
        self.half = self.modulus / 2
        self.raw = np.full(n, np.nan)  # last raw counter
        self.total = np.zeros(n)  # unwrapped events since start
        width = np.array([q.count_window for q in r]) / BUCKETS
        self.buckets = _Buckets(width, np.inf, first_wins=True)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        ok = ~np.isnan(x)
        raw, total = self.raw[cols], self.total[cols]
        with np.errstate(invalid="ignore"):
            delta = x - raw
            wrapped = delta < 0
            if wrapped.any():
                delta += np.where(wrapped, self.modulus[cols], 0.0)
            # a reset (or a reading outside the counter's range), or no previous reading
            delta[~((delta >= 0.0) & (delta <= self.half[cols]))] = 0.0
        before = total.copy()
        total += delta
        np.copyto(raw, x, where=ok)
        if not isinstance(cols, slice):
            self.raw[cols], self.total[cols] = raw, total
        # each bucket keeps the total just before its first reading
        start = self.buckets.add(cols, len(self), t, before, ok)
        m = total - start
        m[~ok] = np.nan
        return m[None, :]

    def describe(self, row: int, col: int, x: float, m: float) -> tuple[float, float, str]:
        """Events counted in the window, "per <window>" (not the raw counter reading)."""
        return m, self.rows.threshold(row, col), f"/{self.specs[col].rules.count_window:g} s"
