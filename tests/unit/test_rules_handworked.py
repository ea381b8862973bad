"""Hand-worked cases of DOMAIN.md's default rules, through the real RuleEngine with the shipped
config/rules/default.toml (loaded by the config loader, 1 s polls).

Every expected event (time, alarm, transition, level, value) is written here by hand from the
rules table, not computed: defaults 30 s on-delay, 60 s off-delay, 2 % hysteresis; stale after
3 polls. Times are seconds from the start of each case; readings come once a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from agent.config import load_config
from agent.core.model import Frame, PointSpec, Quality
from agent.rules import RuleEngine
from firmware_sim.harness import dump_toml
from tests.conftest import REPO

NAN = math.nan
COMM = int(Quality.COMM_FAIL)
WRAP = 2.0**32  # the spark counter is 32 bits

POINTS: list[dict[str, Any]] = [
    {"key": "hopper_temp", "kind": "hopper_temperature", "address": 0},
    {"key": "diff_pressure", "kind": "differential_pressure", "address": 2},
    {"key": "fan_running", "kind": "fan_running", "address": 4, "type": "uint16"},
    {"key": "airlock_state", "kind": "airlock_valve", "address": 5, "type": "uint16"},
    {"key": "spark_count", "kind": "spark_count", "address": 6, "type": "uint32"},
    {"key": "inlet_temp", "kind": "inlet_temperature", "address": 8},
    {"key": "outlet_temp", "kind": "outlet_temperature", "address": 10},
    {"key": "hydrogen", "kind": "hydrogen", "address": 12},
    {
        "key": "level_4_20",
        "kind": "generic",
        "address": 14,
        "rule": {"range_min": 0.0, "range_max": 100.0, "loop_ma": True},
    },
]


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PointSpec]:
    d = tmp_path_factory.mktemp("handworked")
    pts = [{"table": "input", "type": "float32", **p} for p in POINTS]
    cfg = {
        "profiles_dir": str(REPO / "config" / "profiles"),
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
        "site": {"enterprise_code": "E1", "gateway_id": "G1"},
        "buses": [{"name": "plant", "host": "127.0.0.1", "port": 5020, "poll_interval": 1.0}],
        "devices": [{"name": "DC-1", "bus": "plant", "unit": 1, "points": pts}],
        "storage": {"dir": str(d / "var")},
    }
    (d / "agent.toml").write_text(dump_toml(cfg))
    return {p.key: p for p in load_config(d / "agent.toml").points}


Series = Callable[[int], Mapping[str, float]]
Event = tuple[float, str, str, str | None, float]


def run(specs: dict[str, PointSpec], seconds: int, readings: Series) -> list[Event]:
    """Feed one frame a second (t = 0 .. seconds-1) of the readings `readings(t)` gives; a NaN
    reading fails with COMM_FAIL. Returns (t, alarm suffix, transition, level, value)."""
    eng = RuleEngine(list(specs.values()))
    out: list[Event] = []
    for t in range(seconds):
        now = readings(t)
        keys = sorted(now, key=lambda k: specs[k].index)
        idx = [specs[k].index for k in keys]
        v = np.array([now[k] for k in keys], dtype=np.float64)
        q = np.where(np.isnan(v), COMM, 0).astype(np.uint8)
        f = Frame(np.array(idx, dtype=np.intp), np.full(len(idx), float(t)), v, q)
        for e in eng.step(f):
            code, slot = e.alarm_id.rsplit(":", 1)
            assert code == e.point == f"DC-1.{e.key}"
            out.append((e.ts, f"{e.key}:{slot}", e.transition, e.level, round(e.value, 6)))
    return out


def steps(*segments: tuple[int, float]) -> Callable[[int], float]:
    """A piecewise-constant reading: (from t, value) segments."""

    def at(t: int) -> float:
        return [v for start, v in segments if start <= t][-1]

    return at


def test_pack_settings_used_here(specs: dict[str, PointSpec]) -> None:
    ht = specs["hopper_temp"]
    assert ht.rule is not None
    assert (ht.rule.high_warning, ht.rule.high_alarm) == (60.0, 70.0)
    assert (ht.rule.on_delay, ht.rule.off_delay, ht.rule.hysteresis_pct) == (30.0, 60.0, 2.0)
    assert (ht.rules.rate_warning, ht.rules.rate_alarm, ht.rules.rate_hold) == (3.0, 8.0, 180.0)
    assert ht.rules.stale_after == 3.0  # 3 polls of 1 s
    assert specs["spark_count"].rules.count_window == 60.0
    assert specs["airlock_state"].rules.idle_delay == 60.0
    assert specs["airlock_state"].rule is None  # no thresholds: DOMAIN.md's delays apply


def test_hopper_warning_after_the_on_delay_clears_inside_the_band(
    specs: dict[str, PointSpec],
) -> None:
    ht = steps((0, 57.0), (10, 61.0), (60, 59.0), (100, 58.8))
    # 61 ≥ 60 from t=10: raise at 10 + 30; 59.0 is not back to 60 - 1.2 = 58.8; 58.8 from
    # t=100 held 60 s: clear at 160
    assert run(specs, 170, lambda t: {"hopper_temp": ht(t)}) == [
        (40.0, "hopper_temp:high", "raise", "warning", 61.0),
        (160.0, "hopper_temp:high", "clear", None, 58.8),
    ]


def test_a_dip_during_the_on_delay_starts_it_again(specs: dict[str, PointSpec]) -> None:
    ht = steps((0, 57.0), (10, 61.0), (25, 59.5), (26, 61.0))
    assert run(specs, 80, lambda t: {"hopper_temp": ht(t)}) == [
        (56.0, "hopper_temp:high", "raise", "warning", 61.0),  # 26 + 30
    ]


def test_hopper_alarm_escalates_and_deescalates(specs: dict[str, PointSpec]) -> None:
    ht = steps((0, 58.0), (10, 62.0), (60, 66.0), (120, 70.5), (200, 69.0), (230, 68.6))
    # alarm ≥ 70 from 120: escalate at 150; back to 70 - 1.4 = 68.6 from 230 (69.0 is not):
    # deescalate at 290; the warning stays (68.6 ≥ 58.8)
    assert run(specs, 300, lambda t: {"hopper_temp": ht(t)}) == [
        (40.0, "hopper_temp:high", "raise", "warning", 62.0),
        (150.0, "hopper_temp:high", "escalate", "alarm", 70.5),
        (290.0, "hopper_temp:high", "deescalate", "warning", 68.6),
    ]


def test_rate_of_rise_held_three_minutes(specs: dict[str, PointSpec]) -> None:
    # 4 K/min = 1/15 K/s from 20 °C: the slope is trusted from t=15 (a quarter of the 60 s
    # window), held 180 s: warning at 195; the temperature is then only 33 °C
    rise = run(specs, 200, lambda t: {"hopper_temp": 20.0 + t / 15})
    assert rise == [(195.0, "hopper_temp:rate", "raise", "warning", 4.0)]
    # 9 K/min: both levels hold from t=15; raised straight to alarm at 195
    fast = run(specs, 200, lambda t: {"hopper_temp": 0.0 + t * 0.15})
    assert fast == [(195.0, "hopper_temp:rate", "raise", "alarm", 9.0)]
    # 2.9 K/min for 5 minutes: never
    assert run(specs, 300, lambda t: {"hopper_temp": 20.0 + t * 2.9 / 60}) == []


def test_low_dp_counts_only_while_the_fan_runs(specs: dict[str, PointSpec]) -> None:
    fan = steps((0, 0.0), (60, 1.0), (150, 0.0))
    dp = steps((0, 250.0), (100, 140.0))

    def readings(t: int) -> dict[str, float]:
        return {"fan_running": fan(t), "diff_pressure": dp(t)}

    # fan off: 250 Pa is normal; fan on at 60: ≤ 300 → warning at 90; 140 ≤ 150 from 100 →
    # alarm at 130. The fall 250 → 140 is 44 % of the 5-minute peak (> 40 %, fan running: a
    # bag leak) → drop alarm at 130 too. Fan off at 150: neither counts → both clear 60 s
    # later, at 210 (thresholds before drops within a frame)
    assert run(specs, 220, readings) == [
        (90.0, "diff_pressure:low", "raise", "warning", 250.0),
        (130.0, "diff_pressure:low", "escalate", "alarm", 140.0),
        (130.0, "diff_pressure:drop", "raise", "alarm", 44.0),
        (210.0, "diff_pressure:low", "clear", None, 140.0),
        (210.0, "diff_pressure:drop", "clear", None, 44.0),
    ]


def test_sparks_counted_across_the_counter_wrap(specs: dict[str, PointSpec]) -> None:
    counter = steps((0, WRAP - 2), (10, WRAP - 1), (20, 0.0), (30, 1.0))
    # one spark at 10 (warning at once), one at 20 across the wrap, one at 30: 3 in 60 s →
    # alarm. The window is the 10 sub-windows of 6 s ending with the current one: the spark of
    # t=10 (sub-window 1, 6-12 s) leaves it when sub-window 11 begins, at 66; the one of 20
    # (sub-window 3) at 78, the one of 30 (sub-window 5) at 90. Below 3 from 66 for 60 s:
    # deescalate at 126; below 1 from 90 for 60 s: clear at 150.
    assert run(specs, 160, lambda t: {"spark_count": counter(t)}) == [
        (10.0, "spark_count:count", "raise", "warning", 1.0),
        (30.0, "spark_count:count", "escalate", "alarm", 3.0),
        (126.0, "spark_count:count", "deescalate", "warning", 0.0),
        (150.0, "spark_count:count", "clear", None, 0.0),
    ]


def test_a_counter_reset_counts_no_sparks(specs: dict[str, PointSpec]) -> None:
    counter = steps((0, 5000.0), (10, 3.0), (20, 3.0))  # the detector restarted at 10
    assert run(specs, 40, lambda t: {"spark_count": counter(t)}) == []


def test_airlock_stopped_over_60_s_while_the_fan_runs(specs: dict[str, PointSpec]) -> None:
    fan = steps((0, 1.0), (200, 0.0))
    lock = steps((0, 1.0), (10, 0.0), (100, 1.0), (170, 0.0), (250, 2.0))

    def readings(t: int) -> dict[str, float]:
        return {"fan_running": fan(t), "airlock_state": lock(t)}

    # stopped from 10: alarm at 70; running again at 100: clear at 160; stopped at 170 but the
    # fan stops at 200 before 60 s: nothing; fault (2) at 250: alarm at once
    assert run(specs, 260, readings) == [
        (70.0, "airlock_state:idle", "raise", "alarm", 0.0),
        (160.0, "airlock_state:idle", "clear", None, 1.0),
        (250.0, "airlock_state:state", "raise", "alarm", 2.0),
    ]


def test_outlet_above_inlet_by_more_than_15_k(specs: dict[str, PointSpec]) -> None:
    outlet = steps((0, 50.0), (10, 56.0), (100, 54.9), (130, 54.0))

    def readings(t: int) -> dict[str, float]:
        return {"inlet_temp": 40.0, "outlet_temp": outlet(t)}

    # 16 K ≥ 15 from 10: warning at 40; 14.9 is not back to 15 - 0.3; 14 from 130: clear at 190
    assert run(specs, 200, readings) == [
        (40.0, "outlet_temp:diff", "raise", "warning", 16.0),
        (190.0, "outlet_temp:diff", "clear", None, 14.0),
    ]


def test_hydrogen_levels_25_and_50_percent_lel(specs: dict[str, PointSpec]) -> None:
    # (ends at 130 s: its rise rule is trusted from 75 s and held 60 s, so it cannot fire)
    h2 = steps((0, 10.0), (5, 26.0), (40, 51.0), (100, 49.5))
    assert run(specs, 131, lambda t: {"hydrogen": h2(t)}) == [
        (35.0, "hydrogen:high", "raise", "warning", 26.0),
        (70.0, "hydrogen:high", "escalate", "alarm", 51.0),
    ]  # 49.5 is not back to 50 - 1 = 49


def test_stale_after_three_polls_unless_the_whole_unit_is_silent(
    specs: dict[str, PointSpec],
) -> None:
    h2 = steps((0, 10.0), (3, NAN), (8, 10.0))
    # the hopper reading of the same unit gets through: the hydrogen reading is stale when
    # its last good one (t=2) is 3 s old, at 5; a good reading at 8 clears it at once
    both = run(specs, 10, lambda t: {"hopper_temp": 40.0, "hydrogen": h2(t)})
    assert both == [
        (5.0, "hydrogen:stale", "raise", "warning", 3.0),
        (8.0, "hydrogen:stale", "clear", None, 0.0),
    ]
    # the whole unit silent: no stale warnings (the device's comm_loss alarm covers it)
    silent = steps((0, 40.0), (3, NAN), (8, 40.0))
    assert run(specs, 10, lambda t: {"hopper_temp": silent(t), "hydrogen": h2(t)}) == []


def test_4_20_ma_loop_below_3_6_ma_is_a_sensor_fault(specs: dict[str, PointSpec]) -> None:
    level = steps((0, 50.0), (10, -3.0), (100, 50.0))
    # -3 % of a 0..100 span is 4 + 16 x -0.03 = 3.52 mA < 3.6, and outside the span: the loop
    # alarm and the range warning after the 30 s on-delay; back to 12 mA at 100: both clear
    # after the 60 s off-delay
    assert run(specs, 170, lambda t: {"level_4_20": level(t)}) == [
        (40.0, "level_4_20:range", "raise", "warning", -3.0),
        (40.0, "level_4_20:loop", "raise", "alarm", 3.52),
        (160.0, "level_4_20:range", "clear", None, 50.0),
        (160.0, "level_4_20:loop", "clear", None, 12.0),
    ]
