"""Shared fixtures: a real mosquitto broker on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.harness import Broker, HarnessError, mosquitto_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto; fails (never skips) with install advice when it is missing."""
    try:
        mosquitto_path()
    except HarnessError as exc:
        pytest.fail(str(exc))
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop(hard=True)
