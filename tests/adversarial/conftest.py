"""Helpers for the adversarial config tests: the shipped example config, edited as text, run
through the loader in-process or through the real `dust-agent` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.core.model import AgentConfig
from tests.conftest import REPO

EXAMPLE = REPO / "config" / "agent.example.toml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def example_text(tmp_path: Path) -> str:
    """The shipped example, with absolute profile and rules paths and storage in tmp_path."""
    return (
        f'profiles_dir = "{REPO / "config" / "profiles"}"\n'
        f'rules_pack = "{REPO / "config" / "rules" / "default.toml"}"\n'
        + EXAMPLE_TEXT.replace('dir = "../var/demo"', f'dir = "{tmp_path / "state"}"')
    )


def write_config(tmp_path: Path, text: str | bytes, name: str = "agent.toml") -> Path:
    f = tmp_path / name
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text, encoding="utf-8")
    return f


def config_error(file: Path) -> ConfigError:
    """The ConfigError loading `file` raises (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load_config(file)
    return info.value


def loads(file: Path) -> AgentConfig:
    return load_config(file)


def dust_agent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `dust-agent` command (this interpreter), output captured as text."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )
