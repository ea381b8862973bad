"""The reconnect policy's arithmetic (probe cadence, spread phases, flaps) and its [uplink] keys."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, load_config
from agent.core.backoff import Reconnect, ReconnectPolicy, key_phase, slot_phase
from firmware_sim.harness import dump_toml
from tests.conftest import REPO


def test_probes_start_at_initial_and_stay_within_the_cap() -> None:
    r = Reconnect(ReconnectPolicy(initial=0.1, cap=1.0), random.Random(1))
    r.lost()
    delays = [r.probe_delay() for _ in range(30)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[10:])
    r.lost()  # a new outage starts over from `initial`
    assert r.probe_delay() <= 0.1


def test_connect_waits_for_the_agents_instant_in_the_cycle() -> None:
    r = Reconnect(ReconnectPolicy(jitter=5.5, phase=0.5))
    assert r.connect_delay(wall=5.5 * 1000) == pytest.approx(2.75)
    assert r.connect_delay(wall=5.5 * 1000 + 2.75) == pytest.approx(0.0)
    assert r.connect_delay(wall=5.5 * 1000 + 2.8) == pytest.approx(5.45)  # just missed: next cycle
    assert Reconnect(ReconnectPolicy(jitter=0.0)).connect_delay() == 0.0


@pytest.mark.parametrize("first", [0, 1, 37, 1000])
def test_consecutive_slots_put_at_most_20_connects_in_any_second(first: int) -> None:
    # 100 agents, a 5.5 s cycle: the broker restarts at any moment; count per 1 s of wall clock
    jitter = 5.5
    agents = [
        Reconnect(ReconnectPolicy(jitter=jitter, phase=slot_phase(first + i))) for i in range(100)
    ]
    for k in range(200):
        restart = 1_700_000_000 + k * jitter / 200
        at = sorted(restart + a.connect_delay(wall=restart) for a in agents)
        assert at[-1] - restart < jitter
        peak = max(sum(1 for t in at if s <= t < s + 1.0) for s in at)
        assert peak <= 20, (first, k, peak)


def test_hashed_phases_are_stable_and_spread() -> None:
    assert key_phase("dust-agent-GW01") == key_phase("dust-agent-GW01")
    phases = [key_phase(f"dust-agent-GW{i:03d}") for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in phases)
    assert 0.45 < sum(phases) / len(phases) < 0.55


def test_a_flapping_link_widens_the_spread() -> None:
    r = Reconnect(ReconnectPolicy(jitter=2.0, refused=60.0, stable_after=30.0), random.Random(2))
    for now in (0.0, 10.0, 20.0):  # three sessions that each lasted a second
        r.connected(now)
        r.lost(now + 1.0)
    assert r.flaps == 3
    assert max(r.connect_delay() for _ in range(200)) > 2.0
    r.connected(100.0)
    r.lost(200.0)  # a stable session ends the flapping
    assert r.flaps == 0


def load(tmp_path: Path, **uplink: Any) -> Any:
    data = tomllib.loads((REPO / "config" / "agent.example.toml").read_text())
    data["profiles_dir"] = str(REPO / "config" / "profiles")
    data["rules_pack"] = str(REPO / "config" / "rules" / "default.toml")
    data["storage"]["dir"] = str(tmp_path)
    data["uplink"].update(uplink)
    path = tmp_path / "agent.toml"
    path.write_text(dump_toml(data))
    return load_config(path)


def test_uplink_reconnect_keys(tmp_path: Path) -> None:
    uplink = load(tmp_path).uplink
    default = uplink.reconnect
    assert (default.initial, default.cap, default.jitter, default.refused) == (0.1, 0.25, 5.5, 60)
    assert uplink.client_id.startswith("dust-agent-")  # default: from the gateway id
    assert default.phase == key_phase(uplink.client_id)
    r = load(
        tmp_path,
        reconnect_initial=0.5,
        reconnect_cap=2.0,
        reconnect_jitter=3.0,
        reconnect_refused=10.0,
        reconnect_slot=7,
    ).uplink.reconnect
    assert (r.initial, r.cap, r.jitter, r.refused, r.phase) == (0.5, 2.0, 3.0, 10.0, slot_phase(7))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("reconnect_initial", 0),
        ("reconnect_cap", 0.05),  # below reconnect_initial
        ("reconnect_jitter", -1),
        ("reconnect_refused", 0.5),
        ("reconnect_slot", -1),
    ],
)
def test_bad_reconnect_values_name_the_key(tmp_path: Path, key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **{key: value})
    assert f"uplink.{key}" in str(info.value)


def test_a_refused_login_waits_half_to_all_of_reconnect_refused() -> None:
    r = Reconnect(ReconnectPolicy(refused=60.0), random.Random(3))
    waits = [r.refused_delay() for _ in range(100)]
    assert all(30.0 <= w <= 60.0 for w in waits)
