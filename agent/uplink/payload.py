"""Wire encoding (orjson): outbox entries from frames and alarms, and versioned MQTT messages.

Bodies stored in the outbox carry no seq numbers; build_message adds them from the rows'
seq ranges when a batch is sent. docs/payloads.md documents every field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import numpy as np
import orjson

from agent.core.decimals import WireRounding
from agent.core.model import AlarmEvent, Frame, PointSpec, SiteSpec
from agent.store.outbox import Batch, Entry, Row, event_entry
from agent.uplink.contract import Message
from agent.uplink.sizing import Oversize, fit, publish_budget

log = logging.getLogger(__name__)

WIRE_VERSION: Final = 1
TELEMETRY_COLUMNS: Final = ("point", "device", "key", "ts", "value", "quality", "unit")
Status = Literal["online", "offline"]


def encode_telemetry(frame: Frame, points: Sequence[PointSpec]) -> Entry:
    """One frame as one columnar telemetry entry; `points` is indexed by PointSpec.index.

    NaN and infinite values become null: the quality bits say why. Values are rounded to
    each point's resolution (agent.core.decimals): -3.9, not -3.9000000000000004. The columns
    that do not change between cycles (point, device, key, unit) are encoded once per point set
    (`_static_columns`); the bytes are those of orjson.dumps of the whole dict.
    """
    point, device, key, unit = _static_columns(frame.index, points)
    ts_ms = np.rint(frame.ts * 1000.0).astype(np.int64)
    value = rounding_for(points).apply(frame.index, frame.value)
    value[~np.isfinite(value)] = np.nan  # orjson: NaN as null
    body = b"".join(
        (
            b'{"point":',
            point,
            b',"device":',
            device,
            b',"key":',
            key,
            b',"ts":',
            orjson.dumps(ts_ms, option=orjson.OPT_SERIALIZE_NUMPY),
            b',"value":',
            orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY),
            b',"quality":',
            orjson.dumps(frame.quality, option=orjson.OPT_SERIALIZE_NUMPY),
            b',"unit":',
            unit,
            b"}",
        )
    )
    created = float(frame.ts.min()) if len(frame) else time.time()
    return Entry("telemetry", len(frame), body, created)


_ROUNDING: list[tuple[Sequence[PointSpec], WireRounding]] = []


def rounding_for(points: Sequence[PointSpec]) -> WireRounding:
    """The wire rounding of a point list, built once per list (a reload brings a new one)."""
    if not _ROUNDING or _ROUNDING[0][0] is not points:
        _ROUNDING[:] = [(points, WireRounding(points))]
    return _ROUNDING[0][1]


# id(frame.index) -> (that index array, the points it was encoded with, the four columns).
# A bus plan's index array is the same object every cycle; a reload brings new ones.
_STATIC: dict[int, tuple[np.ndarray, Sequence[PointSpec], tuple[bytes, ...]]] = {}
_STATIC_MAX = 64


def _static_columns(index: np.ndarray, points: Sequence[PointSpec]) -> tuple[bytes, ...]:
    """point, device, key and unit columns of these points, encoded (cached)."""
    hit = _STATIC.get(id(index))
    if hit is not None and hit[0] is index and hit[1] is points:
        return hit[2]
    specs = [points[i] for i in index.tolist()]
    # copied to their exact size: orjson's own bytes keep the capacity it grew to (~10x)
    cols = tuple(
        bytes(memoryview(orjson.dumps([getattr(p, name) for p in specs])))
        for name in ("code", "device", "key", "unit")
    )
    if index.flags.writeable:  # an array that may change in place is not cached
        return cols
    if len(_STATIC) >= _STATIC_MAX:
        _STATIC.clear()
    _STATIC[id(index)] = (index, points, cols)
    return cols


def encode_alarms(events: Sequence[AlarmEvent]) -> Entry:
    """Alarm transitions as one alarm-stream entry (a list of AlarmEvent.to_record())."""
    body = orjson.dumps([e.to_record() for e in events])
    created = min((e.ts for e in events), default=time.time())
    return Entry("alarm", len(events), body, created)


def encode_event(kind: str, data: dict[str, Any], ts: float | None = None) -> Entry:
    """One gateway event (e.g. "clock_jump", "data_dropped") as an event-stream entry."""
    return event_entry(kind, data, ts)


def build_message(
    site: SiteSpec,
    batch: Batch,
    *,
    backfill: bool,
    clock_synced: bool = True,
    sent: float | None = None,
) -> bytes:
    """The versioned wire message for one leased batch (see docs/payloads.md).

    Telemetry bodies are spliced as bytes (no JSON parse): this is the drain's hot path.
    """
    head = orjson.dumps(
        {
            "v": WIRE_VERSION,
            "enterprise": site.enterprise_code,
            "gateway": site.gateway_id,
            "stream": batch.stream,
            "backfill": backfill,
            "clock_synced": clock_synced,
            "sent": round((time.time() if sent is None else sent) * 1000),
            "records": None,
        }
    )
    if batch.stream == "telemetry":
        records = _splice_columns(batch)
    else:
        records = orjson.dumps(_merge_objects(batch))
    return head[: -len(_NULL_TAIL)] + records + b"}"


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


_NULL_TAIL: Final = b"null}"
_HEAD: Final = b'{"' + TELEMETRY_COLUMNS[0].encode() + b'":['
# In orjson output a raw `],"` only occurs between columns: inside a string a quote is escaped
_SEPS: Final = tuple(b'],"' + c.encode() + b'":[' for c in TELEMETRY_COLUMNS[1:])


def _fragments(row: Row) -> list[bytes]:
    """The inner text of each column array of one stored telemetry body, in column order."""
    body = row.body
    if not (body.startswith(_HEAD) and body.endswith(b"]}")):
        raise ValueError(f"outbox row {row.id}: not a columnar telemetry body")
    out: list[bytes] = []
    pos = len(_HEAD)
    for sep in _SEPS:
        end = body.find(sep, pos)
        if end < 0:
            raise ValueError(f"outbox row {row.id}: column {sep[3:-3]!r} missing")
        out.append(body[pos:end])
        pos = end + len(sep)
    out.append(body[pos:-2])
    return out


def _splice_columns(batch: Batch) -> bytes:
    """{"seq":[..],"point":[..],...} for all rows, by joining the stored column fragments."""
    columns: list[list[bytes]] = [[] for _ in TELEMETRY_COLUMNS]
    seqs: list[str] = []
    for row in batch.rows:
        for col, frag in zip(columns, _fragments(row), strict=True):
            col.append(frag)
        seqs.append(",".join(map(str, range(row.seq_first, row.seq_first + row.n))))
    parts = [b'{"seq":[', ",".join(seqs).encode()]
    for name, col in zip(TELEMETRY_COLUMNS, columns, strict=True):
        parts += [b'],"', name.encode(), b'":[', b",".join(col)]
    parts.append(b"]}")
    return b"".join(parts)


def merge_columns(batch: Batch) -> dict[str, list[Any]]:
    """The records of a telemetry batch as parsed columns (a checked, slower reference)."""
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


class MqttCodec:
    """The MQTT uplink's codec (agent.uplink.contract.Codec): one message per batch, split
    (agent.uplink.sizing) so that no PUBLISH packet exceeds `max_bytes`. A record too large
    to send alone is logged once, counted in `oversize_records` and left out."""

    def __init__(
        self,
        site: SiteSpec,
        topic: Callable[[str], str],
        clock_synced: Callable[[], bool],
        max_bytes: int = 1 << 40,
    ) -> None:
        self.site, self.topic, self.clock_synced = site, topic, clock_synced
        self.max_bytes = max_bytes
        self.oversize_records = 0  # records left out since start (too large alone)
        # (stream, seq) already reported: a batch sent again after a failure is encoded again
        self._reported: dict[tuple[str, int], None] = {}

    def encode(self, batch: Batch) -> list[Message]:
        topic = self.topic(batch.stream)
        synced, sent = self.clock_synced(), time.time()

        def build(part: Batch) -> bytes:
            return build_message(
                self.site, part, backfill=batch.backfill, clock_synced=synced, sent=sent
            )

        out: list[Message] = []
        for got in fit(batch, publish_budget(self.max_bytes, topic), build):
            if isinstance(got, Oversize):
                self._oversize(batch, got)
            else:
                out.append(Message(topic, got[0], got[1]))
        return out

    def _oversize(self, batch: Batch, got: Oversize) -> None:
        key = (batch.stream, got.row.seq_first)
        if key in self._reported:
            return
        self._reported[key] = None
        if len(self._reported) > 1000:  # bounded: forget the oldest
            del self._reported[next(iter(self._reported))]
        self.oversize_records += got.row.n
        log.error(
            "%s record seq %d is too large to send: its message alone is %d bytes, over"
            " uplink.max_bytes_per_message (%d payload bytes on %s); dropped, not retried",
            batch.stream,
            got.row.seq_first,
            got.size,
            got.budget,
            self.topic(batch.stream),
        )

    def acked(self, batch: Batch) -> None:
        """Nothing to commit: a message depends only on its batch."""
