"""The status page's labels in English and Chinese, and the choice of language per request."""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

# key -> (English, 中文)
LABELS: dict[str, tuple[str, str]] = {
    "title": ("dust-agent status", "粉尘监测网关状态"),
    "overview": ("Overview", "总览"),
    "alarms": ("Active alarms", "当前报警"),
    "journal": ("Alarm journal", "报警日志"),
    "uplinks": ("Uplinks & system", "上传与系统"),
    "bus": ("Bus", "总线"),
    "device": ("Device", "设备"),
    "devices": ("Devices", "设备"),
    "state": ("State", "状态"),
    "points": ("Points", "测点"),
    "bad_points": ("Bad points", "异常测点"),
    "last_good": ("Last good read", "最近有效读数"),
    "cycle": ("Cycle interval", "采集周期"),
    "cycles": ("cycles", "周期数"),
    "overruns": ("overruns", "超时周期"),
    "timeouts": ("timeouts", "超时"),
    "connected": ("Connected", "已连接"),
    "disconnected": ("Not connected", "未连接"),
    "ok": ("ok", "正常"),
    "down": ("degraded", "降级"),
    "quarantined": ("quarantined", "隔离"),
    "unknown": ("no data yet", "尚无数据"),
    "point": ("Point", "测点"),
    "value": ("Value", "数值"),
    "key": ("Key", "键名"),
    "unit": ("Unit", "单位"),
    "quality": ("Quality", "质量"),
    "read_at": ("Read at", "读取时间"),
    "trend": ("Trend", "趋势"),
    "good": ("good", "良好"),
    "comm_fail": ("no answer", "通讯失败"),
    "protocol": ("device error", "设备异常应答"),
    "bad_value": ("bad value", "无效值"),
    "unsynced": ("clock not synced", "时钟未同步"),
    "level": ("Level", "级别"),
    "warning": ("warning", "预警"),
    "alarm": ("alarm", "报警"),
    "critical": ("critical", "严重"),
    "since": ("Since", "起始时间"),
    "kind": ("Rule", "规则"),
    "quantity": ("Quantity", "数值"),
    "threshold": ("Threshold", "阈值"),
    "acked": ("Acknowledged", "已确认"),
    "shelved": ("Shelved until", "搁置至"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "action": ("Action", "操作"),
    "by": ("your name", "操作人"),
    "ack": ("Acknowledge", "确认"),
    "shelve": ("Shelve", "搁置"),
    "none_active": ("No active alarms.", "当前无报警。"),
    "time": ("Time", "时间"),
    "transition": ("Transition", "变化"),
    "text": ("Text", "内容"),
    "filter": ("Filter", "筛选"),
    "all": ("all", "全部"),
    "hours": ("Last hours", "最近小时数"),
    "chain_ok": ("Hash chain verified", "哈希链校验通过"),
    "chain_broken": ("Hash chain BROKEN", "哈希链校验失败"),
    "lines": ("lines", "行"),
    "shown": ("shown (newest first, at most", "条（最新在前，最多"),
    "no_entries": ("No journal entries match.", "没有符合条件的日志。"),
    "uplink": ("Uplink", "上传通道"),
    "target": ("Target", "目标"),
    "pending": ("Pending records", "待发送记录"),
    "oldest": ("Oldest unsent", "最早未发送"),
    "last_error": ("Last error", "最近错误"),
    "clock": ("Clock", "时钟"),
    "clock_synced": ("synchronised", "已同步"),
    "clock_unsynced": ("not synchronised", "未同步"),
    "clock_jumps": ("Clock jumps", "时钟跳变"),
    "version": ("Version", "版本"),
    "uptime": ("Running since", "运行起始"),
    "site": ("Site", "站点"),
    "gateway": ("Gateway", "网关"),
    "no_history": ("No history yet.", "尚无历史数据。"),
    "min_max": ("min-max band, line: last value", "阴影：最小-最大，曲线：末值"),
    "updated": ("Updated", "更新于"),
    "token_required": ("Access token required.", "需要访问令牌。"),
    "not_found": ("Not found.", "未找到。"),
    "back": ("Back", "返回"),
}


def t(lang: Lang, key: str) -> str:
    """The label `key` in `lang` (the key itself when unknown, so a gap shows, never fails)."""
    pair = LABELS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh" else pair[0]


def negotiate(accept_language: str) -> Lang:
    """The first of zh / en in the Accept-Language header by weight; English otherwise."""
    best: tuple[float, int, Lang] | None = None
    for pos, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0:
            cand = (q, -pos, primary if primary == "zh" else "en")
            if best is None or cand[:2] > best[:2]:
                best = (q, -pos, "zh" if primary == "zh" else "en")
    return best[2] if best else "en"
