"""Scenario files (TOML, docs/simulator.md): a timeline, agent settings for the run and
expectations. The shipped ones live in firmware-sim/scenarios/ and are found by name.

    name = "smoulder"
    description = "..."
    duration = 60                 # seconds the run lasts at most (scenario time)
    config = "demo"               # the site config it was written for (default: the demo site)

    [agent]                       # merged into the agent's config for run-scenario
    poll_interval = 0.25          # every bus
    [agent.rules.defaults]        # any [rules] table of the agent config
    on_delay = 1.0

    [[timeline]]                  # firmware_sim.timeline
    at = 10
    point = "DC-1.hopper_temp"
    ramp = 1.0
    until = 85

    [[expect]]                    # firmware_sim.expect
    alarm = "DC-1.hopper_temp"
    kind = "rate"
    between = [10, 40]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.expect import Expectation, parse_expectations
from firmware_sim.timeline import ScenarioError, Timeline, parse_timeline

SHIPPED = Path(__file__).resolve().parent / "scenarios"
KNOWN_KEYS = {"name", "description", "duration", "config", "agent", "timeline", "expect"}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str = ""
    duration: float = 60.0
    config: str = "demo"
    agent: dict[str, Any] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    expectations: tuple[Expectation, ...] = ()


def shipped_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def find_scenario(name_or_path: str) -> Path:
    """A file path, or the name of a shipped scenario."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = SHIPPED / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    raise ScenarioError(
        f"no scenario {name_or_path!r}: give a file or one of {', '.join(shipped_names())}"
    )


def load_scenario(name_or_path: str) -> Scenario:
    path = find_scenario(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    try:
        return Scenario(
            name=str(data.get("name", path.stem)),
            path=path,
            description=str(data.get("description", "")),
            duration=float(data.get("duration", 60.0)),
            config=str(data.get("config", "demo")),
            agent=dict(data.get("agent", {})),
            timeline=parse_timeline(list(data.get("timeline", []))),
            expectations=parse_expectations(list(data.get("expect", []))),
        )
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
