"""Wire encoding (orjson): outbox entries from frames and alarms, and versioned MQTT messages.

Bodies stored in the outbox carry no seq numbers; build_message adds them from the rows'
seq ranges when a batch is sent. docs/payloads.md documents every field.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import orjson

from agent.model import AlarmEvent, Frame, PointSpec, SiteSpec
from agent.outbox import Batch, Entry, event_body

WIRE_VERSION: Final = 1
TELEMETRY_COLUMNS: Final = ("point", "device", "key", "ts", "value", "quality", "unit")
Status = Literal["online", "offline"]


def encode_telemetry(frame: Frame, points: Sequence[PointSpec]) -> Entry:
    """One frame as one columnar telemetry entry; `points` is indexed by PointSpec.index.

    NaN and infinite values become null: the quality bits say why.
    """
    idx = frame.index.tolist()
    specs = [points[i] for i in idx]
    ts_ms = np.rint(frame.ts * 1000.0).astype(np.int64)
    value = np.where(np.isfinite(frame.value), frame.value, np.nan)
    body = orjson.dumps(
        {
            "point": [p.code for p in specs],
            "device": [p.device for p in specs],
            "key": [p.key for p in specs],
            "ts": ts_ms.tolist(),
            "value": value.tolist(),  # orjson writes NaN as null
            "quality": frame.quality.astype(np.int64).tolist(),
            "unit": [p.unit for p in specs],
        }
    )
    created = float(frame.ts.min()) if len(frame) else time.time()
    return Entry("telemetry", len(frame), body, created)


def encode_alarms(events: Sequence[AlarmEvent]) -> Entry:
    """Alarm transitions as one alarm-stream entry (a list of AlarmEvent.to_record())."""
    body = orjson.dumps([e.to_record() for e in events])
    created = min((e.ts for e in events), default=time.time())
    return Entry("alarm", len(events), body, created)


def encode_event(kind: str, data: dict[str, Any], ts: float | None = None) -> Entry:
    """One gateway event (e.g. "clock_jump", "data_dropped") as an event-stream entry."""
    now = time.time() if ts is None else ts
    return Entry("event", 1, event_body(kind, data, now), now)


def build_message(
    site: SiteSpec,
    batch: Batch,
    *,
    backfill: bool,
    clock_synced: bool = True,
    sent: float | None = None,
) -> bytes:
    """The versioned wire message for one leased batch (see docs/payloads.md)."""
    records: object = (
        _merge_columns(batch) if batch.stream == "telemetry" else _merge_objects(batch)
    )
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "enterprise": site.enterprise_code,
            "gateway": site.gateway_id,
            "stream": batch.stream,
            "backfill": backfill,
            "clock_synced": clock_synced,
            "sent": round((time.time() if sent is None else sent) * 1000),
            "records": records,
        }
    )


def build_status(
    site: SiteSpec,
    state: Status,
    *,
    version: str,
    reason: str,
    ts: float | None = None,
) -> bytes:
    """The retained status message (birth "online", will or goodbye "offline")."""
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "enterprise": site.enterprise_code,
            "gateway": site.gateway_id,
            "state": state,
            "reason": reason,
            "ts": round((time.time() if ts is None else ts) * 1000),
            "version": version,
        }
    )


def _merge_columns(batch: Batch) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"seq": []}
    for name in TELEMETRY_COLUMNS:
        out[name] = []
    for row in batch.rows:
        cols = orjson.loads(row.body)
        for name in TELEMETRY_COLUMNS:
            col = cols[name]
            if len(col) != row.n:
                raise ValueError(f"outbox row {row.id}: column {name} has {len(col)} != {row.n}")
            out[name].extend(col)
        out["seq"].extend(range(row.seq_first, row.seq_first + row.n))
    return out


def _merge_objects(batch: Batch) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in batch.rows:
        items = orjson.loads(row.body)
        if len(items) != row.n:
            raise ValueError(f"outbox row {row.id}: {len(items)} records != {row.n}")
        for i, item in enumerate(items):
            out.append({"seq": row.seq_first + i, **item})
    return out
