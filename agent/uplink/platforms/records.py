"""Outbox batches → platform items, through a declarative field mapping (spec.FieldMap).

Telemetry: one value per point and `period` (the first reading of each point in each
period-aligned window of its source timestamps), so that an rtsData request carries every
point once a period and a backlog keeps its original timestamps. Readings without a value
(a failed read: null) are not sent; the comm_loss alarm says why. Alarms: raise, escalate,
deescalate and clear transitions become, per point code, the changes of the point's worst
active state (agent.uplink.platforms.status), sent at once; `value` is then the point's own
reading at the event (the record's `reading`), `threshold` the limit of that value (empty for
kinds that are no such limit), and kinds whose scd is NOT_SENT do not count. comm_loss goes
to every point of its device on this platform. Ack and shelve are local operator actions and
are not sent. Records of points that are not on this platform are skipped.

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

from agent.core.platformspec import NOT_SENT, FieldMap, PlatformSpec, scd_for
from agent.store.outbox import Batch
from agent.uplink.payload import merge_columns
from agent.uplink.platforms.status import Active, Change, PointStatus

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
# kinds whose alarm is a limit of the point's own value: their threshold is sent
LIMIT_KINDS: Final = frozenset({"threshold", "state", "idle"})
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


@dataclass(frozen=True, slots=True)
class Pending:
    """The codec state a batch's requests were built with: committed once all were accepted."""

    windows: dict[str, int]
    status: PointStatus


class Translator:
    """Builds the requests for one leased batch; see the module docstring."""

    def __init__(self, spec: PlatformSpec, status: PointStatus | None = None) -> None:
        self.spec = spec
        self.tz = ZoneInfo(spec.timezone)
        self.sampler = Sampler(spec.period)
        self.status = status or PointStatus()

    def local_time(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def requests(self, batch: Batch) -> tuple[list[Request], Pending]:
        """The requests for `batch` and the state to commit once they are all accepted."""
        spec = self.spec
        if batch.stream == "telemetry" and spec.telemetry is not None:
            state = dict(self.sampler.last)
            items = list(self._telemetry(batch, state, spec.telemetry))
            return self._chunks(spec.telemetry, items), Pending(state, self.status)
        if batch.stream == "alarm" and spec.alarm is not None:
            status = self.status.copy()
            items = list(self._alarms(batch, spec.alarm, status))
            return self._chunks(spec.alarm, items), Pending(self.sampler.last, status)
        # gateway events: the platforms have no endpoint for them
        return [], Pending(self.sampler.last, self.status)

    def commit(self, pending: Pending) -> None:
        self.sampler.last = pending.windows
        self.status = pending.status

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

    def _alarms(self, batch: Batch, fm: FieldMap, status: PointStatus) -> Iterator[dict[str, Any]]:
        """Each alarm transition → the changes of its points' worst active state (status.py);
        comm_loss (point: the device) → every point of the device on this platform."""
        for row in batch.rows:
            for a in orjson.loads(row.body):
                if a.get("transition") not in SENT_TRANSITIONS:
                    continue
                kind, level = a.get("kind", ""), a.get("level")
                now = None
                if level is not None:
                    scd = scd_for(self.spec.scd, kind, a.get("direction", ""), level)
                    # NOT_SENT: not a status this platform takes (platformspec.DEFAULT_SCD);
                    # at this level it no longer counts in the point's worst state
                    if scd != NOT_SENT:
                        now = Active(level, scd, _limit(a), a.get("text_zh") or "")
                clear_scd = scd_for(self.spec.scd, kind, "", None)
                for code in self._codes_of(a):
                    change = status.apply(
                        code, a.get("alarm_id", ""), now, clear_scd, a.get("text_zh") or ""
                    )
                    if change is not None:
                        yield {name: render(t, self._event(a, change)) for name, t in fm.fields}

    def _codes_of(self, a: Mapping[str, Any]) -> tuple[str, ...]:
        point = a.get("point", "")
        if a.get("kind") == "comm_loss":
            return tuple(self.spec.devices.get(a.get("device", ""), ()))
        return (point,) if point in self.spec.codes else ()

    def _event(self, a: Mapping[str, Any], change: Change) -> dict[str, Any]:
        """The record fields of one point's status change (avx: the point's own reading)."""
        code = change.code
        d = self.spec.decimals_of(code)
        own = a.get("point") == code  # comm_loss: the device's event, for each of its points
        reading = _reading(a) if own else _opt((a.get("readings") or {}).get(code))
        return {
            **self._common,
            "point": code,
            "device": a.get("device", ""),
            "key": a.get("key", "") if own else "",
            "value": fmt_value(reading, d),
            "value_num": reading,
            "ts": self.local_time(a["ts"]),
            "ts_ms": a["ts"],
            "unit": a.get("unit", "") if own else "",
            "scd": change.scd,
            "threshold": fmt_value(change.threshold, d),
            "content": change.content or f"{code} 报警状态变化",
            "text_en": a.get("text_en", ""),
            "level": a.get("level") or "",
            "kind": a.get("kind", ""),
            "direction": a.get("direction", ""),
            "transition": a.get("transition", ""),
            "alarm_id": change.alarm_id or a.get("alarm_id", ""),
        }


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _reading(a: Mapping[str, Any]) -> float | None:
    """The point's measured value at the event (records before `reading`: a limit's value)."""
    if "reading" in a:
        r = a["reading"]
        return None if r is None else float(r)
    return a.get("value") if a.get("kind") in LIMIT_KINDS else None


def _limit(a: Mapping[str, Any]) -> float | None:
    """The limit of the point's value an alarm crossed; None for kinds that are no such limit."""
    if a.get("kind") not in LIMIT_KINDS:
        return None
    t = a.get("threshold")
    return None if t is None else float(t)
