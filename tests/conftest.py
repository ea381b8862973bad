"""Shared fixtures: a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.harness import Broker, HarnessError, mosquitto_path

REPO = Path(__file__).resolve().parent.parent

# Test machines and containers rarely run NTP, so the kernel reports the clock unsynchronised
# and every record would carry CLOCK_UNSYNCED. Agents started by the tests take the clock as
# synchronised; tests of the detection itself use agent.service.clock's injectable probes.
os.environ.setdefault("DUST_AGENT_CLOCK_SYNC", "yes")


def _running_broker(directory: Path, *, persistence: bool = False) -> Iterator[Broker]:
    try:
        mosquitto_path()
    except HarnessError as exc:
        pytest.fail(str(exc))
    b = Broker(directory, persistence=persistence)
    b.start()
    try:
        yield b
    finally:
        b.stop(hard=True)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto; fails (never skips) with install advice when it is missing."""
    yield from _running_broker(tmp_path / "broker")


@pytest.fixture
def pbroker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that keeps sessions, subscriptions and queued messages across a graceful
    restart (persistence on)."""
    yield from _running_broker(tmp_path / "pbroker", persistence=True)
