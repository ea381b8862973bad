"""Alarm texts in Chinese and English: equipment, point, value, threshold and unit."""

from __future__ import annotations

import math
import time

from agent.core.decimals import event_numbers
from agent.core.model import AlarmEvent, Direction, Level, PointSpec, Transition
from agent.rules import registry

LEVELS: tuple[Level | None, Level, Level, Level] = (None, "warning", "alarm", "critical")
LEVEL_WORDS: dict[int, tuple[str, str]] = {
    1: ("预警", "warning"),
    2: ("报警", "ALARM"),
    3: ("紧急报警", "CRITICAL"),
}
# kind -> (Chinese, English) name of the condition
KIND_WORDS: dict[str, tuple[str, str]] = {
    "threshold": ("超限", "limit"),
    "rate": ("变化速率", "rate of change"),
    "deviation": ("偏离基线", "deviation from baseline"),
    "difference": ("差值", "difference"),
    "drop": ("骤降", "sudden drop"),
    "count": ("窗口计数", "count in window"),
    "state": ("状态", "state"),
    "idle": ("停止", "stopped"),
    "stale": ("数据中断", "stale data"),
    "frozen": ("数值冻结", "frozen reading"),
    "range": ("超出量程", "out of range"),
    "loop": ("4-20mA回路故障", "4-20 mA loop fault"),
}


def kind_words(kind: str) -> tuple[str, str]:
    """The (Chinese, English) name of an alarm kind: built-in, registered, or the kind itself."""
    words = KIND_WORDS.get(kind)
    if words is None:
        words = registry.kind_words().get(kind, (kind, kind))
    return words


def transition_of(prev: int, new: int) -> Transition:
    if new == 0:
        return "clear"
    if prev == 0:
        return "raise"
    return "escalate" if new > prev else "deescalate"


def num(v: float) -> str:
    """Readable in a text: 63.15, 0.395, 1502 (the exact value is in the event's fields)."""
    if math.isnan(v):
        return "—"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def qty(v: float, unit: str) -> str:
    return f"{num(v)} {unit}" if unit else num(v)


def device_zh(spec: PointSpec) -> str:
    """The device as Chinese texts name it: its `name_zh` where configured, else its name."""
    return spec.device_zh or spec.device


def heads(spec: PointSpec) -> tuple[str, str]:
    """The (Chinese, English) subject of a text: the device and the point."""
    return f"{device_zh(spec)} {spec.name_zh}", f"{spec.device} {spec.name_en}"


def _threshold_texts(
    spec: PointSpec, direction: Direction, prev: int, new: int, *, v: str, t: str
) -> tuple[str, str]:
    transition = transition_of(prev, new)
    zh_head, en_head = heads(spec)
    beyond, inside = ("≥", "≤") if direction == "high" else ("≤", "≥")
    if transition in ("raise", "escalate"):
        zh_word, en_word = LEVEL_WORDS[new]
        return (
            f"{zh_head} {zh_word}：{v} {beyond} {t}",
            f"{en_head} {en_word}: {v} {beyond} {t} ({direction})",
        )
    if transition == "deescalate":
        return (
            f"{zh_head} 报警降为预警：{v}（预警限 {t}）",
            f"{en_head} ALARM eased to warning: {v} (warning limit {t}, {direction})",
        )
    zh_word, en_word = LEVEL_WORDS[prev]
    return (
        f"{zh_head} {zh_word}消除：{v} {inside} {t}",
        f"{en_head} {en_word} cleared: {v} {inside} {t} ({direction})",
    )


def _kind_texts(
    spec: PointSpec, kind: str, prev: int, new: int, *, v: str, t: str
) -> tuple[str, str]:
    zh_kind, en_kind = kind_words(kind)
    zh_head, en_head = heads(spec)
    transition = transition_of(prev, new)
    if kind in ("state", "idle"):
        detail_zh, detail_en = f"状态值 {v}", f"state {v}"
    else:
        detail_zh, detail_en = f"{v}（限值 {t}）", f"{v} (limit {t})"
    if transition == "clear":
        zh_word, en_word = LEVEL_WORDS[prev]
        return (
            f"{zh_head} {zh_kind}{zh_word}消除：{detail_zh}",
            f"{en_head} {en_kind} {en_word} cleared: {detail_en}",
        )
    zh_word, en_word = LEVEL_WORDS[new]
    verb_zh = "降为" if transition == "deescalate" else ""
    verb_en = " eased to" if transition == "deescalate" else ""
    return (
        f"{zh_head} {zh_kind}{verb_zh}{zh_word}：{detail_zh}",
        f"{en_head} {en_kind}{verb_en} {en_word}: {detail_en}",
    )


def make_event(
    spec: PointSpec,
    direction: Direction,
    prev: int,
    new: int,
    *,
    value: float,
    threshold: float,
    ts: float,
    kind: str = "threshold",
    suffix: str | None = None,
    unit: str | None = None,
    extra: dict[str, object] | None = None,
    reading: float = math.nan,
) -> AlarmEvent:
    """The event (with zh/en texts) for one level change of one alarm of a point; `reading`
    is the point's own measured value at `ts` (`value` is the rule's quantity)."""
    unit = spec.unit if unit is None else unit
    value, threshold = event_numbers(spec, float(value), float(threshold), unit)
    v, t = qty(value, unit), qty(threshold, unit)
    if kind == "threshold":
        text_zh, text_en = _threshold_texts(spec, direction, prev, new, v=v, t=t)
    else:
        text_zh, text_en = _kind_texts(spec, kind, prev, new, v=v, t=t)
    return AlarmEvent(
        alarm_id=f"{spec.code}:{direction if suffix is None else suffix}",
        point=spec.code,
        device=spec.device,
        key=spec.key,
        direction=direction,
        transition=transition_of(prev, new),
        level=LEVELS[new],
        prev_level=LEVELS[prev],
        value=value,
        threshold=threshold,
        unit=unit,
        ts=float(ts),
        text_zh=text_zh,
        text_en=text_en,
        kind=kind,
        extra=extra or {},
        reading=float(reading),
    )


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def operator_texts(
    spec: PointSpec, kind: str, action: Transition, by: str, until: float | None
) -> tuple[str, str]:
    """Texts of an operator action on an alarm: ack, shelve, unshelve."""
    zh_kind, en_kind = kind_words(kind)
    zh_head = f"{device_zh(spec)} {spec.name_zh} {zh_kind}"
    en_head = f"{spec.device} {spec.name_en} {en_kind}"
    if action == "ack":
        return f"{zh_head} 报警已确认（{by}）", f"{en_head} alarm acknowledged by {by}"
    if action == "shelve":
        assert until is not None
        return (
            f"{zh_head} 报警已搁置至 {_clock(until)}（{by}）",
            f"{en_head} alarm shelved until {_clock(until)} by {by}",
        )
    who_zh, who_en = (f"（{by}）", f" by {by}") if by else ("（到期）", " (expired)")
    return f"{zh_head} 报警解除搁置{who_zh}", f"{en_head} alarm unshelved{who_en}"
