"""The simulator's plant model: register encoding, collector physics, the smoulder scenario."""

from __future__ import annotations

import itertools
import math

import pytest

from firmware_sim.plant import (
    DRY_COLLECTOR_MAP,
    DRY_COLLECTOR_REGISTERS,
    Plant,
    Smoulder,
    decode,
    encode,
)

SEEDS = range(12)


def first_crossing(plant: Plant, unit: int, level: float, until: float = 120.0) -> float:
    """First time (0.05 s resolution) the hopper temperature is >= level."""
    steps = int(until / 0.05)
    for i in range(steps + 1):
        t = i * 0.05
        if plant.collector(unit, t).hopper_temp >= level:
            return t
    return math.inf


# --- encoding --------------------------------------------------------------------------------


def test_encode_known_layouts() -> None:
    assert encode(1.0, "float32", "ABCD") == [0x3F80, 0x0000]
    assert encode(1.0, "float32", "CDAB") == [0x0000, 0x3F80]
    assert encode(0x12345678, "uint32", "ABCD") == [0x1234, 0x5678]
    assert encode(0x12345678, "uint32", "CDAB") == [0x5678, 0x1234]
    assert encode(0x12345678, "uint32", "BADC") == [0x3412, 0x7856]
    assert encode(0x12345678, "uint32", "DCBA") == [0x7856, 0x3412]
    assert encode(-1.5, "int16", scale=0.1) == [0xFFF1]
    assert encode(0.62, "uint16", scale=0.001) == [620]


def test_decode_byte_swapped_example() -> None:
    # The DCBA example of pymodbus issue #2616.
    assert decode([0xDA77, 0xFB41], "float32", "DCBA") == pytest.approx(31.4335, abs=1e-4)


def test_integers_saturate_instead_of_wrapping() -> None:
    assert encode(70000, "uint16") == [0xFFFF]
    assert encode(-5, "uint16") == [0]
    assert encode(4000.0, "int16", scale=0.1) == [0x7FFF]


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
@pytest.mark.parametrize(
    ("type_", "value", "scale"),
    [
        ("float32", 1012.75, 1.0),
        ("float32", -3.5, 1.0),
        ("uint32", 70001, 1.0),
        ("int32", -70001, 1.0),
        ("int16", -12.3, 0.1),
        ("uint16", 0.617, 0.001),
    ],
)
def test_round_trip(type_: str, value: float, scale: float, order: str) -> None:
    regs = encode(value, type_, order, scale)  # type: ignore[arg-type]
    assert all(0 <= r <= 0xFFFF for r in regs)
    back = decode(regs, type_, order, scale)  # type: ignore[arg-type]
    assert back == pytest.approx(value, abs=scale / 2 + 1e-4)


def test_collector_block_layout() -> None:
    assert DRY_COLLECTOR_REGISTERS == 11
    regs = Plant(seed=1).collector_registers(1, 12.3)
    assert len(regs) == 11
    assert all(0 <= r <= 0xFFFF for r in regs)
    state = Plant(seed=1).collector(1, 12.3)
    for p in DRY_COLLECTOR_MAP:
        got = decode(regs[p.address : p.address + p.width], p.type, p.order, p.scale)
        assert got == pytest.approx(state.value(p.key), abs=p.scale / 2 + 1e-3), p.key


# --- collector physics -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_ranges(seed: int) -> None:
    plant = Plant(seed=seed)
    for unit in (1, 2, 3):
        for i in range(0, 1000):
            s = plant.collector(unit, i * 0.3)
            assert 880 <= s.diff_pressure <= 1320
            assert 0.50 <= s.pulse_pressure <= 0.65
            assert 24.0 <= s.inlet_temp <= 26.0
            assert 26.0 <= s.outlet_temp <= 28.0
            assert 35.0 <= s.hopper_temp <= 40.0
            assert (s.fan_running, s.airlock_state, s.spark_count) == (1, 1, 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_diff_pressure_sawtooth_drops_at_each_pulse(seed: int) -> None:
    plant = Plant(seed=seed)
    for unit in (1, 2):
        period = plant.pulse_period(unit)
        assert 20.0 <= period <= 30.0
        pulses = plant.pulse_times(unit, 300.0)
        assert len(pulses) >= 9
        assert pulses[0] <= period
        for tp in pulses:
            before = plant.collector(unit, tp - 0.05)
            after = plant.collector(unit, tp + 0.05)
            assert before.diff_pressure - after.diff_pressure > 200, (unit, tp)
            # the pulse draws on the compressed-air header: a dip, then recovery
            assert after.pulse_pressure < before.pulse_pressure - 0.05
            assert plant.collector(unit, tp + 6.0).pulse_pressure > 0.59
            # between pulses the cake builds up: ΔP rises
            early = plant.collector(unit, tp + 0.1 * period).diff_pressure
            late = plant.collector(unit, tp + 0.9 * period).diff_pressure
            assert late - early > 150


def test_values_move_at_1_hz() -> None:
    plant = Plant(seed=0, scenario="smoulder")
    for unit in (1, 2):
        regs = [plant.collector_registers(unit, float(t)) for t in range(30)]
        assert all(a != b for a, b in itertools.pairwise(regs))
        dps = {plant.collector(unit, float(t)).diff_pressure for t in range(30)}
        assert max(dps) - min(dps) > 200


# --- smoulder --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_smoulder_crosses_warning_then_alarm_at_advertised_times(seed: int) -> None:
    plant = Plant(seed=seed, scenario="smoulder")
    assert all(plant.collector(1, t * 0.5).hopper_temp < 42 for t in range(21))  # t <= 10 s
    t60 = first_crossing(plant, 1, 60.0)
    t70 = first_crossing(plant, 1, 70.0)
    assert 30.0 <= t60 <= 35.0
    assert 40.0 <= t70 <= 45.0
    # a steady climb: once past a threshold it stays past it
    for level, t_cross in ((60.0, t60), (70.0, t70)):
        assert all(plant.collector(1, t_cross + i * 0.25).hopper_temp >= level for i in range(800))
    # then it levels off at ~85 °C
    plateau = [plant.collector(1, float(t)).hopper_temp for t in range(90, 300)]
    assert min(plateau) >= 82.0 and max(plateau) <= 88.0


@pytest.mark.parametrize("seed", SEEDS)
def test_smoulder_leaves_unit_2_alone(seed: int) -> None:
    hot, calm = Plant(seed=seed, scenario="smoulder"), Plant(seed=seed, scenario="none")
    for i in range(0, 200):
        t = i * 0.7
        assert hot.collector(2, t) == calm.collector(2, t)
        assert calm.collector(1, t).hopper_temp < 40.0


def test_speed_scales_scenario_time_only() -> None:
    normal = Plant(seed=4, scenario="smoulder")
    fast = Plant(seed=4, scenario="smoulder", speed=2.0)
    assert first_crossing(fast, 1, 60.0) == pytest.approx(
        first_crossing(normal, 1, 60.0) / 2, abs=1.0
    )
    assert fast.pulse_times(1, 100.0) == normal.pulse_times(1, 100.0)


def test_smoulder_curve_is_continuous_and_bounded() -> None:
    s = Smoulder()
    values = [s.excess(i * 0.01) for i in range(20000)]
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert min(steps) >= 0.0  # never cools during the scenario
    assert max(steps) <= s.rate * 0.01 + 1e-9  # never faster than the advertised rate
    assert values[-1] <= s.rise


def test_unknown_scenario_and_bad_speed() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        Plant(scenario="fire")
    with pytest.raises(ValueError, match="speed"):
        Plant(speed=0)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_plant() -> None:
    a, b = Plant(seed=42, scenario="smoulder"), Plant(seed=42, scenario="smoulder")
    times = [i * 0.37 for i in range(500)]
    for unit in (1, 2, 7):
        assert [a.collector_registers(unit, t) for t in times] == [
            b.collector_registers(unit, t) for t in times
        ]
    # querying in another order gives the same answers: no hidden state
    assert [a.collector(1, t) for t in reversed(times)] == [b.collector(1, t) for t in times][::-1]


def test_other_seed_other_noise() -> None:
    a, b = Plant(seed=1), Plant(seed=2)
    assert [a.collector(1, float(t)) for t in range(20)] != [
        b.collector(1, float(t)) for t in range(20)
    ]


def test_units_differ() -> None:
    plant = Plant(seed=0)
    assert plant.pulse_period(1) != plant.pulse_period(2)
    assert plant.collector(1, 5.0) != plant.collector(2, 5.0)


# --- bench plant -----------------------------------------------------------------------------


def test_bench_registers_change_and_fit_uint16() -> None:
    plant = Plant(seed=0)
    for unit in (1, 25, 50):
        snaps = [plant.bench_registers(unit, float(t), 20) for t in range(10)]
        assert all(len(s) == 20 for s in snaps)
        assert all(0 <= r <= 0xFFFF for s in snaps for r in s)
        for a, b in itertools.pairwise(snaps):
            assert sum(x != y for x, y in zip(a, b, strict=True)) >= 15
    assert plant.bench_registers(1, 3.0, 1) == [3]
    assert plant.bench_registers(1, 70000.0, 1) == [70000 & 0xFFFF]
