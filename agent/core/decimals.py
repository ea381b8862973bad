"""Wire values at a point's resolution: the shortest decimal that round-trips, not float noise.

A reading is decoded to float64 (raw x scale + offset), so an int16 x 0.1 of -39 becomes
-3.9000000000000004 and a float32 63.153 becomes 63.15299987792969. On the wire each value is
rounded to what the point can resolve, and orjson then writes the shortest repr:

- a point with `decimals` set: rounded to that many decimals;
- coils, discrete inputs, bit fields: 0 decimals;
- integer types: the decimals of `scale` and `offset` (x 0.1 -> 1, x 0.25 -> 2, x 1 -> 0;
  a scale with no short decimal form, e.g. 1/3, gets MAX_DECIMALS);
- float32: the shortest decimal that reads back as the same float32 (63.153);
- float64: unchanged (orjson already writes the shortest float64 form).

`WireRounding.apply` is vectorised (a gather, a multiply, a rint and a divide per frame; the
float32 search runs only over float32 points). Derived alarm measures in another unit (a rate
in degC/min, a count per window) have no register resolution: `round_measure` keeps
MEASURE_DIGITS significant digits, far more than any sensor gives, far fewer than the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.core.model import PointSpec

MAX_DECIMALS = 9
MEASURE_DIGITS = 6
THRESHOLD_DIGITS = 12  # a threshold is kept as the config wrote it, minus float noise
F32_DIGITS = 9  # every float32 round-trips through 9 significant digits
F32_MIN_DIGITS = 6  # every 6-digit decimal round-trips through a float32 (FLT_DIG)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
F32 = -1  # decimals code: shortest float32 form
KEEP = -2  # decimals code: leave the float64 as it is


def decimals_of(x: float) -> int:
    """The fewest decimals that write `x` exactly (0.1 -> 1, 0.25 -> 2, 1/3 -> MAX_DECIMALS)."""
    for d in range(MAX_DECIMALS + 1):
        if abs(round(x, d) - x) <= abs(x) * 1e-12:
            return d
    return MAX_DECIMALS


def wire_decimals(p: PointSpec) -> int:
    """The point's rounding on the wire: decimals >= 0, or F32 / KEEP (module docstring)."""
    if p.decimals is not None:
        return p.decimals
    if p.table in ("coil", "discrete") or p.bit is not None:
        return 0
    if p.type == "float32":
        return F32
    if p.type == "float64":
        return KEEP
    return max(decimals_of(p.scale), decimals_of(p.offset))


def shortest_f32(x: FloatArray) -> FloatArray:
    """Each value as the shortest decimal that reads back as the same float32.

    Vectorised over digit counts, not values. A normal float32 starts at 6 significant
    digits: when a shorter decimal reads back (0.3, 63.153), it is also the nearest 6-digit
    decimal (6-digit decimals lie further apart than a float32 step), so rounding to 6 finds
    it; the values left over try 7, 8, then 9 digits, which always read back. Magnitudes
    outside 1e-13..1e13 (where 10**k is no longer exact; subnormals) take numpy's float32
    repr one by one.
    """
    out = x.copy()
    x32 = x.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.abs(x32)
        finite = np.isfinite(x32) & (x32 != 0)
        vector = finite & (mag >= 1e-13) & (mag < 1e13)
        _search(out, x, x32, np.flatnonzero(vector), F32_MIN_DIGITS)
    for i in np.flatnonzero(finite & ~vector).tolist():
        out[i] = float(str(x32[i]))  # numpy prints the shortest float32 digits
    return out


def _search(
    out: FloatArray, x: FloatArray, x32: npt.NDArray[np.float32], todo: IntArray, start: int
) -> None:
    """Into out[todo]: the fewest digits from `start` on that read back as x32."""
    if todo.size == 0:
        return
    v, want = x[todo], x32[todo]
    e = np.floor(np.log10(np.abs(v))).astype(np.int64)
    for digits in range(start, F32_DIGITS + 1):
        k = digits - 1 - e
        p = 10.0 ** np.abs(k)
        cand = np.where(k >= 0, np.rint(v * p) / p, np.rint(v / p) * p)
        ok = cand.astype(np.float32) == want
        out[todo[ok]] = cand[ok]
        keep = ~ok
        if not keep.any():
            return
        todo, v, want, e = todo[keep], v[keep], want[keep], e[keep]


class WireRounding:
    """Per-point wire rounding over all points of a config, applied to frames by index."""

    def __init__(self, points: Sequence[PointSpec]) -> None:
        codes = np.array([wire_decimals(p) for p in points], dtype=np.int64)
        self.pow10: FloatArray = np.where(codes >= 0, 10.0 ** np.maximum(codes, 0), np.nan)
        self.f32 = codes == F32
        self.any_f32 = bool(self.f32.any())
        self.any_keep = bool((codes == KEEP).any())

    def apply(self, index: npt.NDArray[np.intp], value: FloatArray) -> FloatArray:
        """The values of points `index` rounded for the wire (a new array)."""
        p = self.pow10[index]
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.rint(value * p)
            out /= p
            out += 0.0  # -0.0 -> 0.0
        if self.any_f32 or self.any_keep:
            plain = np.isnan(p)
            out[plain] = value[plain]
            if self.any_f32:
                f = np.flatnonzero(self.f32[index])
                if f.size:
                    out[f] = shortest_f32(value[f])
        return out


def round_value(p: PointSpec, value: float) -> float:
    """One value in the point's unit, rounded as on the wire (alarm values, status)."""
    if not math.isfinite(value):
        return value
    d = wire_decimals(p)
    if d == KEEP:
        return value
    if d == F32:
        return float(shortest_f32(np.array([value]))[0])
    return round(value, d) + 0.0


def round_measure(value: float, digits: int = MEASURE_DIGITS) -> float:
    """A derived measure (rate, count, seconds stale) to `digits` significant digits."""
    if not math.isfinite(value) or value == 0:
        return value
    d = digits - 1 - math.floor(math.log10(abs(value)))
    return round(value, d) + 0.0


def event_numbers(p: PointSpec, value: float, threshold: float, unit: str) -> tuple[float, float]:
    """An alarm's (value, threshold) for the wire: a value in the point's unit at the point's
    resolution, a derived measure to MEASURE_DIGITS, the threshold to THRESHOLD_DIGITS."""
    v = round_value(p, value) if unit == p.unit else round_measure(value)
    return v, round_measure(threshold, THRESHOLD_DIGITS)
