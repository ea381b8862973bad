"""Outbox batches → platform items, through a declarative field mapping (spec.FieldMap).

Telemetry: one value per point and `period` (the first reading of each point in each
period-aligned window of its source timestamps), so that an rtsData request carries every
point once a period and a backlog keeps its original timestamps. Readings without a value
(a failed read: null) are not sent; the comm_loss alarm says why. Alarms: raise, escalate,
deescalate and clear transitions are sent at once (ack and shelve are local operator actions
and are not sent). Records of points that are not on this platform are skipped.

The record fields a template may use:

    telemetry   point device key value value_num ts ts_ms unit quality enterprise gateway
    alarm       point device key value value_num ts ts_ms unit scd threshold content text_en
                level kind direction transition alarm_id enterprise gateway

`value` and `threshold` are strings with the point's decimals; `ts` is the platform's local
time "YYYY-MM-DD HH:MM:SS"; `ts_ms` epoch milliseconds; `content` the Chinese alarm text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from agent.core.platformspec import FieldMap, PlatformSpec, scd_for
from agent.store.outbox import Batch
from agent.uplink.payload import merge_columns

TELEMETRY_FIELDS: Final = frozenset(
    [
        "point",
        "device",
        "key",
        "value",
        "value_num",
        "ts",
        "ts_ms",
        "unit",
        "quality",
        "enterprise",
        "gateway",
    ]
)
ALARM_FIELDS: Final = frozenset(
    [
        "point",
        "device",
        "key",
        "value",
        "value_num",
        "ts",
        "ts_ms",
        "unit",
        "scd",
        "threshold",
        "content",
        "text_en",
        "level",
        "kind",
        "direction",
        "transition",
        "alarm_id",
        "enterprise",
        "gateway",
    ]
)
SENT_TRANSITIONS: Final = frozenset({"raise", "escalate", "deescalate", "clear"})
WHOLE_FIELD: Final = re.compile(r"^\{(\w+)\}$")
_NAMES: Final = re.compile(r"\{(\w+)(?:[:!][^}]*)?\}")


def template_names(template: str) -> set[str]:
    """The record fields a template uses ({name} or {name:format})."""
    return set(_NAMES.findall(template))


def render(template: str, rec: Mapping[str, Any]) -> Any:
    whole = WHOLE_FIELD.match(template)
    if whole:
        return rec[whole.group(1)]
    if "{" not in template:
        return template
    return template.format_map(rec)


def fmt_value(value: float | None, decimals: int) -> str:
    """A value as the platforms want it: a string with fixed decimals ("" when unknown)."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{decimals}f}"


@dataclass(slots=True)
class Sampler:
    """Remembers, per point code, the last period window sent (committed only after an ack)."""

    period: float
    last: dict[str, int] = field(default_factory=dict)

    def window(self, ts_ms: int) -> int:
        return int(ts_ms // round(self.period * 1000))


@dataclass(frozen=True, slots=True)
class Request:
    endpoint: str
    body: bytes  # the inner JSON (plaintext, before the envelope)
    items: int


class Translator:
    """Builds the requests for one leased batch; see the module docstring."""

    def __init__(self, spec: PlatformSpec) -> None:
        self.spec = spec
        self.tz = ZoneInfo(spec.timezone)
        self.sampler = Sampler(spec.period)

    def local_time(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def requests(self, batch: Batch) -> tuple[list[Request], dict[str, int]]:
        """The requests for `batch` and the sampler state to commit once they are all acked."""
        spec = self.spec
        if batch.stream == "telemetry" and spec.telemetry is not None:
            state = dict(self.sampler.last)
            items = list(self._telemetry(batch, state, spec.telemetry))
            return self._chunks(spec.telemetry, items), state
        if batch.stream == "alarm" and spec.alarm is not None:
            items = list(self._alarms(batch, spec.alarm))
            return self._chunks(spec.alarm, items), self.sampler.last
        return [], self.sampler.last  # gateway events: the platforms have no endpoint for them

    def commit(self, state: dict[str, int]) -> None:
        self.sampler.last = state

    def _chunks(self, fm: FieldMap, items: list[dict[str, Any]]) -> list[Request]:
        out: list[Request] = []
        step = self.spec.max_items
        for i in range(0, len(items), step):
            chunk = items[i : i + step]
            doc: Any = chunk
            if fm.list_key:
                doc = {k: render(t, self._common) for k, t in fm.extra}
                *outer, inner = fm.list_key.split(".")  # "data.rts": {"data": {"rts": items}}
                node = doc
                for key in outer:
                    node = node.setdefault(key, {})
                node[inner] = chunk
            out.append(Request(fm.endpoint, orjson.dumps(doc), len(chunk)))
        return out

    @property
    def _common(self) -> dict[str, Any]:
        return {"enterprise": self.spec.enterprise_code, "gateway": self.spec.gateway_code}

    def _telemetry(
        self, batch: Batch, state: dict[str, int], fm: FieldMap
    ) -> Iterator[dict[str, Any]]:
        spec, common = self.spec, self._common
        cols = merge_columns(batch)
        for point, device, key, ts, value, quality, unit in zip(
            cols["point"],
            cols["device"],
            cols["key"],
            cols["ts"],
            cols["value"],
            cols["quality"],
            cols["unit"],
            strict=True,
        ):
            if point not in spec.codes or value is None:
                continue
            win = self.sampler.window(ts)
            if state.get(point, -1) >= win:
                continue
            state[point] = win
            rec = {
                **common,
                "point": point,
                "device": device,
                "key": key,
                "value": fmt_value(value, spec.decimals_of(point)),
                "value_num": value,
                "ts": self.local_time(ts),
                "ts_ms": ts,
                "unit": unit,
                "quality": quality,
            }
            yield {name: render(t, rec) for name, t in fm.fields}

    def _alarms(self, batch: Batch, fm: FieldMap) -> Iterator[dict[str, Any]]:
        spec, common = self.spec, self._common
        for row in batch.rows:
            for a in orjson.loads(row.body):
                point = a.get("point", "")
                if point not in spec.codes or a.get("transition") not in SENT_TRANSITIONS:
                    continue
                d = spec.decimals_of(point)
                value = a.get("value")
                rec = {
                    **common,
                    "point": point,
                    "device": a.get("device", ""),
                    "key": a.get("key", ""),
                    "value": fmt_value(value, d),
                    "value_num": value,
                    "ts": self.local_time(a["ts"]),
                    "ts_ms": a["ts"],
                    "unit": a.get("unit", ""),
                    "scd": scd_for(
                        spec.scd, a.get("kind", ""), a.get("direction", ""), a.get("level")
                    ),
                    "threshold": fmt_value(a.get("threshold"), d),
                    "content": a.get("text_zh") or f"{point} 报警状态变化",
                    "text_en": a.get("text_en", ""),
                    "level": a.get("level") or "",
                    "kind": a.get("kind", ""),
                    "direction": a.get("direction", ""),
                    "transition": a.get("transition", ""),
                    "alarm_id": a.get("alarm_id", ""),
                }
                yield {name: render(t, rec) for name, t in fm.fields}
