"""The rule engine's state follows the rules configured: a kind no point uses is absent, a
detector row no point enables is not stored, a setting every point shares is held once; and
alarms, thresholds and restores are the same as with every row stored."""

from __future__ import annotations

import numpy as np

from agent.core.model import Frame, PointSpec, ThresholdRule
from agent.core.rulespec import PointRules
from agent.rules import RuleEngine
from agent.rules.rows import uniform
from tests.factories import point

N = 50
HIGH_ALARM_ONLY = ThresholdRule(high_alarm=70.0, on_delay=0.0, off_delay=0.0)


def frame(t: float, value: float, n: int = N) -> Frame:
    v = np.full(n, value)
    v[1:] = 20.0  # only point 0 moves
    return Frame(np.arange(n), np.full(n, t), v, np.zeros(n, dtype=np.uint8))


def engine(n: int = N) -> RuleEngine:
    specs: list[PointSpec] = [
        point(i, rule=HIGH_ALARM_ONLY, rules=PointRules(stale_after=3.0)) for i in range(n)
    ]
    return RuleEngine(specs)


def test_only_the_kinds_and_rows_in_use_hold_state() -> None:
    eng = engine()
    assert [k.name for k in eng.kinds] == ["threshold", "quality"]
    threshold, quality = eng.kinds
    assert threshold.rows.gain.shape == (1, N)  # high alarm of H, HH, L, LL
    assert quality.rows.gain.shape == (1, N)  # stale of stale, frozen, range, loop
    assert threshold.rows.threshold(1, 0) == 70.0
    assert np.isnan(threshold.rows.threshold(0, 0))
    assert not threshold.rows.is_on(0, 0)


def test_a_stored_subset_of_rows_raises_clears_and_restores() -> None:
    eng = engine()
    raised = eng.step(frame(0.0, 75.0))
    assert [(e.alarm_id, e.transition, e.level, e.threshold) for e in raised] == [
        ("P000:high", "raise", "alarm", 70.0)
    ]
    again = engine()
    assert again.restore(eng.snapshot()) == []
    assert again.kinds[0].rows.is_on(1, 0)
    assert again.step(frame(1.0, 75.0)) == []  # restored: no second raise
    cleared = again.step(frame(2.0, 20.0))
    assert [(e.alarm_id, e.transition, e.threshold) for e in cleared] == [
        ("P000:high", "clear", 70.0)
    ]
    assert [e.alarm_id for e in again.step(frame(6.0, np.nan))] == ["P000:stale"]


def test_a_setting_every_point_shares_is_held_once() -> None:
    shared = uniform(np.array([[3.0] * 1000, [np.nan] * 1000]))
    assert shared.strides[-1] == 0 and shared.shape == (2, 1000)
    assert shared[0, 999] == 3.0 and np.isnan(shared[1, 0])
    mixed = np.array([1.0, 2.0, 1.0])
    assert uniform(mixed) is mixed
    signed = np.array([0.0, -0.0])
    assert uniform(signed) is signed  # bit for bit: -0.0 keeps its sign
