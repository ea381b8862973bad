"""The real `dust-agent` command picks its language: LANG, then the config's `language`, then
DUST_AGENT_LANG, each over the one before (docs/operations.md, "Language")."""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from agent.core.model import AlarmEvent
from agent.service.status_file import StatusFile
from agent.store.journal import Journal
from firmware_sim.harness import dump_toml
from tests.conftest import REPO
from tests.e2e import BIN, agent_config

pytestmark = pytest.mark.integration


def _plant(tmp: Path, language: str | None) -> Path:
    """A config (no agent running), a fresh status snapshot and one alarm in the journal."""
    tmp.mkdir(exist_ok=True)
    cfg = agent_config(tmp, 1502, 1883)
    if language is not None:
        data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        data["language"] = language
        cfg.write_text(dump_toml(data), encoding="utf-8")
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    status = StatusFile(state)
    status.update("agent", {"state": "running", "pid": os.getpid(), "version": "t", "points": 3})
    status.update("clock", {"synced": True, "source": "adjtimex", "jumps": 0})
    status.update("uplink", {"target": "mqtt://127.0.0.1:1883", "connected": False})
    status.update("outbox", {"pending_records": {"telemetry": 4}})
    status.write()
    event = AlarmEvent(
        alarm_id="1301000000010101001:high",
        point="1301000000010101001",
        device="DC-1",
        key="hopper_temp",
        direction="high",
        transition="raise",
        level="alarm",
        prev_level=None,
        value=72.5,
        threshold=70.0,
        unit="°C",
        ts=time.time(),
        text_zh="1号除尘器 灰斗温度 报警",
        text_en="DC-1 ash-hopper temperature ALARM",
    )
    with Journal(state / "journal", max_bytes=1 << 20, keep=1) as j:
        j.append([event])
    return cfg


def _run(cfg: Path, *args: str, **env: str) -> str:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "DUST_AGENT_LANG"))
    }
    out = subprocess.run(
        [str(BIN / "dust-agent"), *args, "-c", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**clean, **env},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_locale_picks_the_language(tmp_path: Path) -> None:
    cfg = _plant(tmp_path, None)
    zh = _run(cfg, "status", LANG="zh_CN.UTF-8")
    assert "运行中" in zh and "未连接" in zh and "待发送 telemetry 4" in zh, zh
    en = _run(cfg, "status", LANG="en_US.UTF-8")
    assert "running" in en and "DISCONNECTED" in en and "pending telemetry 4" in en, en
    assert "运行中" not in en

    alarms_zh = _run(cfg, "alarms", LANG="zh_CN.UTF-8")
    assert alarms_zh.splitlines()[0].split()[:3] == ["时间", "设备", "测点"]
    assert "1号除尘器 灰斗温度 报警" in alarms_zh and "ash-hopper" not in alarms_zh
    assert alarms_zh.splitlines()[-1] == "共 1 条记录"
    alarms_en = _run(cfg, "alarms", LANG="en_US.UTF-8")
    assert "DC-1 ash-hopper temperature ALARM" in alarms_en and "灰斗" not in alarms_en
    assert alarms_en.splitlines()[-1] == "1 transition"
    # --json is the journal record, in both languages, whatever the locale
    js = _run(cfg, "alarms", "--json", LANG="zh_CN.UTF-8")
    assert '"text_en":"DC-1 ash-hopper temperature ALARM"' in js and "灰斗温度" in js

    check = _run(cfg, "check", LANG="zh_CN.UTF-8")
    assert check.startswith(f"配置 {cfg}: 通过") and "测点与报警阈值:" in check


def test_the_config_overrides_the_locale_and_the_variable_the_config(tmp_path: Path) -> None:
    cfg = _plant(tmp_path, "zh")
    assert "运行中" in _run(cfg, "status", LANG="en_US.UTF-8")
    assert "1号除尘器 灰斗温度 报警" in _run(cfg, "alarms", LANG="en_US.UTF-8")
    en = _run(cfg, "status", LANG="zh_CN.UTF-8", DUST_AGENT_LANG="en")
    assert "running" in en and "运行中" not in en
    assert "ash-hopper" in _run(cfg, "alarms", LANG="zh_CN.UTF-8", DUST_AGENT_LANG="en")

    cfg_en = _plant(tmp_path / "en", "en")
    assert "running" in _run(cfg_en, "status", LANG="zh_CN.UTF-8")
    assert "DC-1 ash-hopper" in _run(cfg_en, "alarms", LANG="zh_CN.UTF-8")
    assert _run(cfg_en, "check", LANG="zh_CN.UTF-8").startswith(f"config {cfg_en}: OK")


def test_an_unknown_language_is_a_config_error(tmp_path: Path) -> None:
    cfg = _plant(tmp_path, "fr")
    out = subprocess.run(
        [str(BIN / "dust-agent"), "check", "-c", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 78
    assert "language" in out.stderr and "expected one of: auto, zh, en" in out.stderr, out.stderr
