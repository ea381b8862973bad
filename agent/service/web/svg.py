"""Trend plots as inline SVG, drawn here (no chart library): a min-max band and the last value."""

from __future__ import annotations

import math
import time

import numpy as np

from agent.store.history import Series

W, H = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def trend_svg(s: Series, seconds: float, now: float, unit: str, label: str) -> str:
    """The plot for `s` over [now - seconds, now]; `unit` and `label` must be escaped already."""
    x0, x1 = now - seconds, now
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    if len(s):
        lo = float(np.nanmin(s.low))
        hi = float(np.nanmax(s.high))
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def x(ts: float) -> float:
        return LEFT + (ts - x0) / (x1 - x0) * pw

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * ph

    parts = [
        f'<svg class="trend" viewBox="0 0 {W} {H}" role="img" aria-label="{label}" '
        f'data-points="{len(s)}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>',
    ]
    for v in _ticks(lo, hi):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
        )
        parts.append(f'<text class="yl" x="{LEFT - 4}" y="{y(v) + 4:.1f}">{_fmt(v)}</text>')
    n_x = 6
    for i in range(n_x + 1):
        ts = x0 + i * seconds / n_x
        anchor = "start" if i == 0 else ("end" if i == n_x else "middle")
        hhmm = time.strftime("%H:%M", time.localtime(ts))
        parts.append(
            f'<text class="xl" x="{x(ts):.1f}" y="{H - 8}" text-anchor="{anchor}">{hhmm}</text>'
        )
    if len(s):
        half = float(s.start[1] - s.start[0]) / 2 if len(s) > 1 else 0.0
        xs = [x(float(t) + half) for t in s.start]
        top = " ".join(f"{a:.1f},{y(float(v)):.1f}" for a, v in zip(xs, s.high, strict=True))
        bot = " ".join(
            f"{a:.1f},{y(float(v)):.1f}" for a, v in reversed(list(zip(xs, s.low, strict=True)))
        )
        parts.append(f'<polygon class="band" points="{top} {bot}"/>')
        line = " ".join(f"{a:.1f},{y(float(v)):.1f}" for a, v in zip(xs, s.last, strict=True))
        parts.append(
            f'<polyline class="last" points="{line}" data-first="{float(s.last[0]):.3f}" '
            f'data-last="{float(s.last[-1]):.3f}"/>'
        )
    parts.append(f'<text class="unit" x="4" y="{TOP + 10}">{unit}</text></svg>')
    return "".join(parts)
