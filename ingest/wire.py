"""Parse the agents' messages (docs/payloads.md, docs/schema/*.json, wire version 1).

Self-contained on purpose: the ingest is the platform's side and imports nothing of `agent`.
Checks are structural and cheap (envelope, topic, column lengths, record keys); a value of a
wrong type is caught by PostgreSQL when the batch is written, and then only that message is
rejected (see ingest.store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

STREAMS = frozenset({"telemetry", "alarm", "event"})
TELEMETRY_COLUMNS = ("seq", "point", "device", "key", "ts", "value", "quality", "unit")
ALARM_REQUIRED = ("seq", "alarm_id", "point", "kind", "transition", "ts")
EVENT_REQUIRED = ("seq", "kind", "ts", "data")


class Malformed(ValueError):
    """A message that does not follow the payload format; `reason` is short and stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Message:
    """One data message: the envelope, and its records as sent (columns or a list of objects)."""

    enterprise: str
    gateway: str
    stream: str
    backfill: bool
    sent: int
    records: Any  # dict of columns (telemetry) or list of dicts (alarm, event)

    @property
    def count(self) -> int:
        r = self.records
        return len(r["seq"]) if self.stream == "telemetry" else len(r)

    @property
    def seqs(self) -> list[int]:
        r = self.records
        return list(r["seq"]) if self.stream == "telemetry" else [x["seq"] for x in r]


def parse(topic: str, payload: bytes) -> Message:
    """The message on `topic` ({prefix}/{enterprise}/{gateway}/{stream}), or Malformed."""
    levels = topic.rsplit("/", 3)
    if len(levels) != 4 or levels[3] not in STREAMS:
        raise Malformed("topic")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Malformed("json") from exc
    if not isinstance(doc, dict):
        raise Malformed("not an object")
    if doc.get("v") != 1:
        raise Malformed("version")
    msg = _envelope(doc)
    if (msg.enterprise, msg.gateway, msg.stream) != (levels[1], levels[2], levels[3]):
        raise Malformed("envelope does not match topic")
    if msg.stream == "telemetry":
        _check_columns(msg.records)
    else:
        _check_objects(msg.records, ALARM_REQUIRED if msg.stream == "alarm" else EVENT_REQUIRED)
    return msg


def _envelope(doc: dict[str, Any]) -> Message:
    ent, gw, stream = doc.get("enterprise"), doc.get("gateway"), doc.get("stream")
    backfill, sent = doc.get("backfill"), doc.get("sent")
    if not (isinstance(ent, str) and ent and isinstance(gw, str) and gw):
        raise Malformed("enterprise/gateway")
    if not isinstance(backfill, bool) or not isinstance(sent, int) or isinstance(sent, bool):
        raise Malformed("backfill/sent")
    if "records" not in doc:
        raise Malformed("records missing")
    return Message(ent, gw, str(stream), backfill, sent, doc["records"])


def _check_columns(records: Any) -> None:
    if not isinstance(records, dict):
        raise Malformed("telemetry records not columnar")
    cols = []
    for name in TELEMETRY_COLUMNS:
        col = records.get(name)
        if not isinstance(col, list):
            raise Malformed(f"telemetry column {name}")
        cols.append(col)
    n = len(cols[0])
    if n == 0 or any(len(c) != n for c in cols):
        raise Malformed("telemetry column lengths")
    if not all(type(s) is int and s > 0 for s in cols[0]):
        raise Malformed("telemetry seq")


def _check_objects(records: Any, required: tuple[str, ...]) -> None:
    if not isinstance(records, list) or not records:
        raise Malformed("records not a list")
    for rec in records:
        if not isinstance(rec, dict) or any(k not in rec for k in required):
            raise Malformed("record fields")
        seq, ts = rec["seq"], rec["ts"]
        if type(seq) is not int or seq <= 0 or type(ts) is not int:
            raise Malformed("record seq/ts")
