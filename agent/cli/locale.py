"""The language of the CLI's human output: Chinese when the locale says so (LANG=zh_CN.UTF-8),
English otherwise. The config's top-level `language = "zh" | "en"` overrides the locale
("auto", the default, follows it); DUST_AGENT_LANG=zh|en overrides both, for one command or an
operator's shell. JSON output is never translated."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

Lang = Literal["en", "zh"]
Language = Literal["auto", "zh", "en"]  # the config key: "auto" follows the locale

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
    # `dust-agent alarms`
    "time": "时间",
    "device": "设备",
    "point": "测点",
    "transition": "变化",
    "level": "级别",
    "text": "内容",
    "raise": "触发",
    "escalate": "升级",
    "deescalate": "降级",
    "clear": "恢复",
    "ack": "确认",
    "shelve": "搁置",
    "unshelve": "取消搁置",
    # `dust-agent check`
    "OK": "通过",
    "points and alarm thresholds": "测点与报警阈值",
    "addresses as written (addressing) and as read": "地址：配置写法（addressing）与实际读取",
}


def cli_lang(env: Mapping[str, str] | None = None, configured: str = "auto") -> Lang:
    """DUST_AGENT_LANG; else the config's `language` unless "auto"; else the first of LC_ALL,
    LC_MESSAGES, LANG that is set; else English."""
    env = os.environ if env is None else env
    override = env.get("DUST_AGENT_LANG", "")
    if override:
        return "zh" if override.lower().startswith("zh") else "en"
    if configured in ("zh", "en"):
        return "zh" if configured == "zh" else "en"
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def configured_language(config: Path) -> str:
    """The config's top-level `language`, read leniently (for `status`, which works while the
    config is broken): "auto" when the file cannot be read or the value is not zh / en."""
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "auto"
    value = data.get("language")
    return value if value in ("zh", "en") else "auto"


def translator(lang: Lang) -> dict[str, str]:
    """A phrase table for `lang`: `tr.get(p, p)` prints `p` in that language."""
    return ZH if lang == "zh" else {}
