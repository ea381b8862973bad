"""Rule-engine tick cost: every rule kind enabled on every point, for 1k, 10k and 100k points.

Prints the median tick time of the vectorized engine (agent.rules.RuleEngine), point
evaluations per second, transitions (events) per tick, and the ratio against the same rules
evaluated point by point in plain Python (tests/oracles/rules_reference.py, the test oracle)
on the same frames. Targets (issue 4): a 10k-point tick under 1 ms with every kind; >= 20x the loop.

Two workloads:
  steady  a running plant: each reading holds its level with a last-digit flicker (0.1 steps),
          and 0.1 % of the points ramp into alarm during the timed ticks (threshold, rate,
          deviation and drop raise; the events are part of the tick);
  storm   every point a random walk (0.3 per tick) read by every kind, including as a spark
          counter: hundreds of count alarms per tick at 10k points. The per-event work
          (lifecycle, texts) dominates; shown for scale, not a target.

    .venv/bin/python bench/rules.py [--sizes 1000,10000,100000] [--ticks 40] [--workload both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.oracles

from agent.core.model import Frame, PointSpec, ThresholdRule
from agent.core.rulespec import PointRules
from agent.rules import RuleEngine
from tests.oracles.rules_reference import RulesReference

WARM = 20  # ticks before timing: the rate fit and the windows fill
EVERY_KIND = PointRules(
    when=0,
    rate_warning=3.0,
    rate_alarm=8.0,
    rate_window=60.0,
    rate_hold=180.0,
    deviation_warning=-10.0,
    deviation_alarm=-25.0,
    diff_warning=15.0,
    minus=1,
    drop_alarm=40.0,
    count_warning=1.0,
    count_alarm=3.0,
    state_alarm=(2,),
    state_critical=(5,),
    idle_states=(0,),
    stale_after=3.0,
    frozen_polls=300,
    range_min=0.0,
    range_max=200.0,
    loop_ma=True,
    chatter_count=6,
)
RULE = ThresholdRule(high_warning=60.0, high_alarm=70.0, low_warning=10.0, low_alarm=5.0)


def points(n: int) -> list[PointSpec]:
    """Point 0 is the gate (running), point 1 the reference of the difference rule."""
    return [
        PointSpec(
            index=i,
            device=f"D{i // 16}",
            key=f"k{i % 16}",
            code=f"P{i}",
            name_zh="点",
            name_en="point",
            bus="b",
            unit_id=1 + i // 16,
            table="input",
            address=i % 60000,
            type="uint16",
            order="ABCD",
            scale=1.0,
            offset=0.0,
            unit="u",
            kind="generic",
            rule=RULE,
            rules=EVERY_KIND if i > 1 else PointRules(),
        )
        for i in range(n)
    ]


def _frame(k: int, x: np.ndarray) -> Frame:
    n = x.shape[0]
    x[0], x[1] = 1.0, 40.0  # the gate: running; the difference reference
    return Frame(np.arange(n, dtype=np.intp), np.full(n, 1.7e9 + k), x, np.zeros(n, dtype=np.uint8))


def steady(n: int, ticks: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    level = np.round(rng.uniform(30, 50, n), 1)
    ramp = np.arange(n) % 1000 == 7
    out = []
    for k in range(ticks):
        if k >= WARM:
            level[ramp] += 1.5  # into H, HH, rate, and past the difference limit
        out.append(_frame(k, np.round(level + rng.normal(0, 0.02, n), 1)))
    return out


def storm(n: int, ticks: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    level = rng.uniform(30, 50, n)
    out = []
    for k in range(ticks):
        level += rng.normal(0, 0.3, n)
        out.append(_frame(k, np.round(level, 2)))
    return out


def median_tick(
    step: Callable[[Frame], list[object]], fs: list[Frame], warm: int
) -> tuple[float, float]:
    """(median seconds per tick, events per timed tick)."""
    for f in fs[:warm]:
        step(f)
    times, events = [], 0
    for f in fs[warm:]:
        t0 = time.perf_counter()
        events += len(step(f))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), events / max(1, len(fs) - warm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--ticks", type=int, default=40, help="timed ticks (vectorized)")
    ap.add_argument("--workload", choices=("steady", "storm", "both"), default="both")
    args = ap.parse_args()
    print("every point: thresholds H/HH/L/LL, rate, deviation, difference, drop, count, state,")
    print("idle (gated), stale, frozen, range, 4-20 mA loop; one frame = every point; medians")
    head = f"{'workload':>8} {'points':>8} {'numpy tick':>11} {'evals/s':>10} {'events':>7}"
    print(f"{head} {'python tick':>12} {'ratio':>6}")
    workloads = ("steady", "storm") if args.workload == "both" else (args.workload,)
    for name in workloads:
        make = steady if name == "steady" else storm
        for n in (int(s) for s in args.sizes.split(",")):
            pts = points(n)
            fs = make(n, WARM + args.ticks)
            vec, ev = median_tick(RuleEngine(pts).step, fs, WARM)  # type: ignore[arg-type]
            # the loop: the same frames (warm-up included), fewer timed ticks at large n
            py_ticks = max(3, min(10, 200_000 // n))
            py, _ = median_tick(RulesReference(pts).step, fs[: WARM + py_ticks], WARM)  # type: ignore[arg-type]
            print(
                f"{name:>8} {n:>8} {vec * 1e3:>9.3f}ms {n / vec:>10.3g} {ev:>7.1f}"
                f" {py * 1e3:>10.1f}ms {py / vec:>5.0f}x"
            )


if __name__ == "__main__":
    main()
