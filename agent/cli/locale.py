"""The language of the CLI's human output: Chinese when the locale says so (LANG=zh_CN.UTF-8),
English otherwise; DUST_AGENT_LANG=zh|en overrides the locale (e.g. in the unit's
Environment= or an operator's shell). JSON output is never translated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

Lang = Literal["en", "zh"]

# English phrase (as printed) -> Chinese; a phrase missing here prints in English.
ZH: dict[str, str] = {
    "running": "运行中",
    "up": "已运行",
    "NOT RUNNING": "未运行",
    "points": "个测点",
    "config": "配置",
    "watchdog STALLED": "看门狗：停滞",
    "watchdog ok": "看门狗：正常",
    "pinged every": "喂狗间隔",
    "delivery STALLED": "上传停滞",
    "file": "文件",
    "used": "已用",
    "reload": "重载",
    "ok": "正常",
    "REJECTED": "被拒绝",
    "clock": "时钟",
    "synchronised": "已同步",
    "NOT synchronised": "未同步",
    "unknown": "未知",
    "jumps": "跳变",
    "last": "最近",
    "at": "于",
    "uplink": "上传",
    "connected": "已连接",
    "DISCONNECTED": "未连接",
    "last error": "最近错误",
    "platform": "平台",
    "accepting": "正常接收",
    "NOT ACCEPTING": "未接收",
    "pending": "待发送",
    "requests accepted": "个请求已接收",
    "outbox": "缓存",
    "oldest unsent": "最早未发送",
    "dropped": "已丢弃",
    "bus / device": "总线 / 设备",
    "unit": "站号",
    "state": "状态",
    "last good read": "最近有效读数",
    "DOWN": "断开",
    "every": "周期",
    "cycles": "个周期",
    "active alarms": "当前报警",
    "value": "数值",
    "threshold": "阈值",
    "since": "起始",
    "snapshot written": "快照写于",
    "ago": "前",
    "down": "降级",
    "quarantined": "隔离",
    "warning": "预警",
    "alarm": "报警",
    "critical": "严重",
    "degraded": "降级（忙）",
    "points BUSY": "个测点忙",
    "comm_loss: no answer for": "通讯中断：无应答已",
    "reading": "读数",
}


def cli_lang(env: Mapping[str, str] | None = None) -> Lang:
    """DUST_AGENT_LANG, else the first of LC_ALL, LC_MESSAGES, LANG that is set."""
    env = os.environ if env is None else env
    for var in ("DUST_AGENT_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def translator(lang: Lang) -> dict[str, str]:
    """A phrase table for `lang`: `tr.get(p, p)` prints `p` in that language."""
    return ZH if lang == "zh" else {}
