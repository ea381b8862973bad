"""`dust-agent status` speaks Chinese when the locale (or DUST_AGENT_LANG) says so."""

from __future__ import annotations

import time

from agent.cli.locale import cli_lang
from agent.cli.status import to_table


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
