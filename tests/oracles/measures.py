"""Measures of the rules oracle (tests/oracles/rules_reference.py), written from the documents:
a weighted least-squares rate, percent of a level, sliding windows, a wrapping counter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RateFit:
    """Weighted least squares over the readings since the fit began."""

    window: float
    history: list[tuple[float, float]] = field(default_factory=list)
    began: float = math.nan

    def add(self, t: float, x: float) -> None:
        if self.history and t < self.history[-1][0]:
            self.history = []  # the clock stepped back: a new fit
        if not self.history:
            self.began = t
        self.history.append((t, x))
        # a weight under e^-40 is below a double's precision next to the newest reading's 1
        self.history = [(ti, xi) for ti, xi in self.history if t - ti <= 40 * self.window]

    def slope(self, t: float) -> tuple[float, float]:
        """(slope per second, weighted mean level); NaN while the fit is not trusted."""
        pts = self.history
        if len(pts) < 3 or t - self.began < self.window / 4:
            return math.nan, math.nan
        w = [math.exp(-(t - ti) / self.window) for ti, _ in pts]
        total = sum(w)
        t_mean = sum(wi * (ti - t) for wi, (ti, _) in zip(w, pts, strict=True)) / total
        x_mean = sum(wi * xi for wi, (_, xi) in zip(w, pts, strict=True)) / total
        s_tt = sum(wi * (ti - t - t_mean) ** 2 for wi, (ti, _) in zip(w, pts, strict=True))
        s_tx = sum(
            wi * (ti - t - t_mean) * (xi - x_mean) for wi, (ti, xi) in zip(w, pts, strict=True)
        )
        if not s_tt > 0:
            return math.nan, math.nan
        return s_tx / s_tt, x_mean


def percent_of(part: float, whole: float) -> float:
    """part / |whole| in percent; of a zero whole: ±infinite, or undefined (NaN) for 0 of 0."""
    if whole == 0:
        return math.nan if part == 0 else math.copysign(math.inf, part)
    return part / abs(whole) * 100


@dataclass
class Window:
    """Readings (t, value) within 10 sub-windows of width window / 10 ending now."""

    width: float
    readings: list[tuple[float, float]] = field(default_factory=list)
    latest: float = -math.inf  # the sub-window of the point's latest reading, good or not

    def see(self, t: float) -> None:
        """Any reading: one stamped in an earlier sub-window than the one before it (the clock
        stepped back) empties the window, as a clock step back begins a new rate fit."""
        now = math.floor(t / self.width)
        if now < self.latest:
            self.readings = []
        self.latest = now

    def add(self, t: float, v: float) -> None:
        self.readings.append((t, v))

    def live(self, t: float) -> list[float]:
        now = math.floor(t / self.width)
        self.readings = [r for r in self.readings if math.floor(r[0] / self.width) > now - 10]
        return [v for _, v in self.readings]


@dataclass
class Counter:
    """Events of a cumulative counter that wraps at 2**bits."""

    bits: int
    last_raw: float = math.nan

    def events(self, raw: float) -> float:
        """Events since the previous reading (0 for the first, and after a reset)."""
        prev, self.last_raw = self.last_raw, raw
        if math.isnan(prev):
            return 0.0
        delta = raw - prev
        if delta < 0:
            delta += 2.0**self.bits
        # more than half the range (or a reading outside the counter's range): a reset
        return delta if 0 <= delta <= 2.0 ** (self.bits - 1) else 0.0
