"""A bounded trend history per point: min / max / last per time bucket, kept on disk.

`History(directory, codes, hours, step)` keeps `hours * 3600 / step` buckets (a ring) for every
point in two memory-mapped files: `history.f4` (float32, shape buckets x 3 x points: min, max,
last) and `history.i8` (int64, the bucket number each ring slot holds), plus `history.json`
naming the point codes, so a restart continues the same curves and a changed point list or
layout starts a fresh history instead of mixing points up. Disk and memory are bounded by
buckets x points x 12 bytes (24 h of minutes at 1,000 points: 17 MB, mapped, paged by the OS).

`observe(frame)` is a few numpy operations on the frame's points (no I/O: the kernel writes
the dirty pages back; `close()` flushes them). It also keeps the latest value, quality and
read time of every point for the status page. Not thread-safe: one writer (the rules stage)
and readers in the same event loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from agent.core.model import Frame, Quality

LAYOUT_VERSION = 1
_BAD_MASK = np.uint8(0xFF & ~int(Quality.CLOCK_UNSYNCED))
MIN, MAX, LAST = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Series:
    """One point's buckets in time order: start of each bucket (epoch s) and its values."""

    start: npt.NDArray[np.float64]
    low: npt.NDArray[np.float32]
    high: npt.NDArray[np.float32]
    last: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.start.shape[0])


class History:
    def __init__(self, directory: Path, codes: Sequence[str], hours: int, step: float) -> None:
        self.directory = directory
        self.step = float(step)
        self.size = max(1, math.ceil(hours * 3600 / step))
        n = len(codes)
        self.n = n
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"v": LAYOUT_VERSION, "step": self.step, "size": self.size, "codes": list(codes)}
        fresh = self._read_meta() != meta
        mode = "w+" if fresh else "r+"
        self.values = np.lib.format.open_memmap(
            directory / "history.f4.npy", mode=mode, dtype=np.float32, shape=(self.size, 3, n)
        )
        self.buckets = np.lib.format.open_memmap(
            directory / "history.i8.npy", mode=mode, dtype=np.int64, shape=(self.size,)
        )
        if fresh:  # slots are cleared when first used: pages are touched only as time passes
            self.buckets[:] = -1
            self.buckets.flush()
            (directory / "history.json").write_bytes(orjson.dumps(meta))
        self.value = np.full(n, np.nan)  # latest reading per point (NaN when bad)
        self.quality = np.zeros(n, dtype=np.uint8)
        self.ts = np.full(n, np.nan)  # wall time of the latest reading

    def _read_meta(self) -> Any:
        try:
            return orjson.loads((self.directory / "history.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def observe(self, frame: Frame) -> None:
        """Fold one frame into the current bucket and the latest values."""
        idx = frame.index
        if idx.shape[0] == 0:
            return
        self.value[idx] = frame.value
        self.quality[idx] = frame.quality
        self.ts[idx] = frame.ts
        good = ((frame.quality & _BAD_MASK) == 0) & np.isfinite(frame.value)
        if not good.any():
            return
        bucket = int(float(np.max(frame.ts)) // self.step)
        slot = bucket % self.size
        row = self.values[slot]
        if self.buckets[slot] != bucket:
            row[:] = np.nan
            self.buckets[slot] = bucket
        gi, gv = idx[good], frame.value[good].astype(np.float32)
        row[MIN, gi] = np.fmin(row[MIN, gi], gv)
        row[MAX, gi] = np.fmax(row[MAX, gi], gv)
        row[LAST, gi] = gv

    def series(self, point: int, seconds: float, now: float) -> Series:
        """The buckets of `point` within the last `seconds` before `now`, oldest first."""
        first = int((now - seconds) // self.step)
        slots = np.flatnonzero((self.buckets >= first) & (self.buckets <= now // self.step))
        order = slots[np.argsort(self.buckets[slots])]
        vals = self.values[order, :, point]
        keep = ~np.isnan(vals[:, LAST])
        order, vals = order[keep], vals[keep]
        return Series(
            start=self.buckets[order].astype(np.float64) * self.step,
            low=np.asarray(vals[:, MIN]),
            high=np.asarray(vals[:, MAX]),
            last=np.asarray(vals[:, LAST]),
        )

    def close(self) -> None:
        """Write the mapped pages back (a restart then continues the curves)."""
        with contextlib.suppress(OSError, ValueError):
            self.values.flush()
            self.buckets.flush()
