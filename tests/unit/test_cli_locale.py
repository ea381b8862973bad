"""The CLI speaks Chinese when the locale, the config's `language` or DUST_AGENT_LANG says so
(the variable first, then the config, then the locale)."""

from __future__ import annotations

import time
from pathlib import Path

from agent.cli.alarms import alarms_report
from agent.cli.locale import cli_lang, configured_language
from agent.cli.status import to_table
from agent.core.model import AlarmEvent
from agent.store.journal import Journal


def test_the_locale_picks_the_language() -> None:
    assert cli_lang({"LANG": "zh_CN.UTF-8"}) == "zh"
    assert cli_lang({"LANG": "en_US.UTF-8"}) == "en"
    assert cli_lang({"LC_ALL": "C.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"  # LC_ALL wins
    assert cli_lang({"DUST_AGENT_LANG": "zh", "LC_ALL": "C"}) == "zh"  # the override wins
    assert cli_lang({}) == "en"


def test_status_table_in_chinese() -> None:
    now = time.time()
    doc = {
        "written": round(now * 1000),
        "agent": {"state": "running", "pid": None, "version": "9", "uptime_s": 5},
        "clock": {"synced": True, "source": "adjtimex", "jumps": 0},
        "uplink": {"target": "mqtt://x:1", "connected": True},
        "outbox": {"pending_records": {"telemetry": 7}},
        "buses": [
            {
                "name": "plant",
                "connected": True,
                "devices": [{"name": "DC-1", "unit": 1, "state": "down", "last_good": None}],
            }
        ],
        "alarms": [{"level": "alarm", "alarm_id": "a1", "device": "DC-1", "key": "hopper_temp"}],
    }
    zh = to_table(doc, now, lang="zh")
    for text in ("运行中", "已同步", "已连接", "降级", "当前报警: 1", "报警", "待发送 telemetry 7"):
        assert text in zh, zh
    en = to_table(doc, now)
    assert "running" in en and "DOWN" in en and "运行" not in en


def test_the_config_overrides_the_locale_and_the_variable_overrides_the_config() -> None:
    assert cli_lang({"LANG": "en_US.UTF-8"}, configured="zh") == "zh"
    assert cli_lang({"LANG": "zh_CN.UTF-8"}, configured="en") == "en"
    assert cli_lang({"LANG": "zh_CN.UTF-8"}, configured="auto") == "zh"
    assert cli_lang({"LANG": "zh_CN.UTF-8", "DUST_AGENT_LANG": "en"}, configured="zh") == "en"
    assert cli_lang({"DUST_AGENT_LANG": "zh"}, configured="en") == "zh"
    assert cli_lang({}, configured="zh") == "zh"


def test_configured_language_is_read_leniently(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('language = "zh"\n[site]\nenterprise_code = 1\n', encoding="utf-8")
    assert configured_language(cfg) == "zh"
    cfg.write_text('language = "fr"\n', encoding="utf-8")
    assert configured_language(cfg) == "auto"
    cfg.write_text("language = [broken\n", encoding="utf-8")
    assert configured_language(cfg) == "auto"
    assert configured_language(tmp_path / "missing.toml") == "auto"


def _journal(directory: Path) -> Path:
    event = AlarmEvent(
        alarm_id="P001:high",
        point="P001",
        device="DC-1",
        key="hopper_temp",
        direction="high",
        transition="raise",
        level="alarm",
        prev_level=None,
        value=72.5,
        threshold=70.0,
        unit="°C",
        ts=1_714_521_600.0,
        text_zh="DC-1 灰斗温度 报警",
        text_en="DC-1 ash-hopper temperature ALARM",
    )
    with Journal(directory, max_bytes=1 << 20, keep=1) as j:
        j.append([event])
    return directory


def test_alarms_print_the_text_of_the_chosen_language(tmp_path: Path) -> None:
    d = _journal(tmp_path)
    en = alarms_report(d, since=None, active_only=False, width=300)
    zh = alarms_report(d, since=None, active_only=False, width=300, lang="zh")
    en_lines, zh_lines = en.splitlines(), zh.splitlines()
    assert en_lines[0].split() == [
        "time", "device", "point", "transition", "level", "value", "threshold", "text"
    ]  # fmt: skip
    assert en_lines[1].endswith(
        "raise       alarm  72.5 °C  70 °C      DC-1 ash-hopper temperature ALARM"
    )
    assert "灰斗" not in en and en_lines[-1] == "1 transition"
    assert zh_lines[0].split() == ["时间", "设备", "测点", "变化", "级别", "数值", "阈值", "内容"]
    assert zh_lines[1].endswith("DC-1 灰斗温度 报警") and "触发" in zh_lines[1]
    assert "ash-hopper" not in zh and zh_lines[-1] == "共 1 条记录"
    none = alarms_report(tmp_path / "nothing", since=None, active_only=False, lang="zh")
    assert none == f"{tmp_path / 'nothing'} 中尚无报警记录"


def test_status_shows_each_uplinks_oldest_unsent() -> None:
    now = time.time()
    lagging = {"profile": "hebei", "target": "https://p", "connected": False}
    doc = {
        "written": round(now * 1000),
        "agent": {"state": "running", "pid": None, "version": "9", "uptime_s": 5},
        "uplink": {"target": "mqtt://x:1", "connected": True},
        "health": {
            "uplinks": {
                "mqtt": {"pending_records": 0, "oldest_unsent_age_s": None},
                "hebei": {**lagging, "pending_records": 12, "oldest_unsent_age_s": 600.0},
            }
        },
    }
    en = to_table(doc, now)
    assert "uplink   mqtt://x:1 connected; pending 0, oldest unsent -" in en, en
    assert "platform hebei (hebei) https://p NOT ACCEPTING; pending 12, oldest unsent 10 min," in en
    zh = to_table(doc, now, lang="zh")
    assert "平台 hebei (hebei) https://p 未接收; 待发送 12, 最早未发送 10 min," in zh, zh
