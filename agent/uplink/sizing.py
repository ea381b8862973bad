"""Messages within a byte limit: split a leased batch until every MQTT message fits.

The outbox leases batches by an estimate of their size, and one stored row (a whole poll
cycle of a large bus) can exceed the limit on its own. `fit()` builds the message and, while
it is too large, splits: a batch of several rows in halves by rows, a single row by its
records (at device boundaries where one is near, else by points). A split row keeps its seq
numbers (records seq_first + i ..), so the consumer sees the same records, only in more
messages; the batch is acknowledged in the outbox once every message of it was.

A single record whose message alone exceeds the limit cannot be sent to this broker: it is
yielded as an `Oversize` (the caller logs it once and counts it as dropped) instead of being
retried for ever.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from agent.store.records import Batch, Row

# An MQTT PUBLISH (QoS 1) packet beside its payload: fixed header (1 byte + up to 4 bytes of
# remaining length), topic length (2) and packet identifier (2). A limit equal to a broker's
# maximum packet size then never produces a packet the broker refuses.
PUBLISH_OVERHEAD: Final = 9


def publish_budget(limit: int, topic: str) -> int:
    """Payload bytes a PUBLISH to `topic` may carry within a packet of `limit` bytes."""
    return limit - len(topic.encode()) - PUBLISH_OVERHEAD


@dataclass(frozen=True, slots=True)
class Oversize:
    """A record that alone makes a message of `size` bytes (over `budget`): not sendable."""

    row: Row
    size: int
    budget: int


def fit(
    batch: Batch, budget: int, build: Callable[[Batch], bytes]
) -> Iterator[tuple[bytes, int] | Oversize]:
    """(payload, records) per message of at most `budget` bytes, or Oversize per record that
    cannot fit; the records of all of them together are the batch's."""
    body = build(batch)
    if len(body) <= budget:
        yield body, batch.records
        return
    rows = batch.rows
    if len(rows) > 1:
        mid = len(rows) // 2
        yield from fit(dataclasses.replace(batch, rows=rows[:mid]), budget, build)
        yield from fit(dataclasses.replace(batch, rows=rows[mid:]), budget, build)
        return
    row = rows[0]
    if row.n <= 1:
        yield Oversize(row, len(body), budget)
        return
    pieces = max(2, -(-len(body) // max(budget, 1)))
    for part in split_row(batch.stream, row, pieces):
        yield from fit(dataclasses.replace(batch, rows=(part,)), budget, build)


def split_row(stream: str, row: Row, pieces: int) -> list[Row]:
    """The row as up to `pieces` rows of consecutive records (same id, seq ranges within)."""
    parsed: Any = orjson.loads(row.body)
    if stream == "telemetry":
        devices: list[Any] = parsed["device"]
        cuts = _cuts(devices, pieces)
        bodies = [orjson.dumps({k: v[a:b] for k, v in parsed.items()}) for a, b in cuts]
    else:
        cuts = _cuts([None] * len(parsed), pieces)
        bodies = [orjson.dumps(parsed[a:b]) for a, b in cuts]
    return [
        Row(row.id, row.seq_first + a, b - a, body, row.ts)
        for (a, b), body in zip(cuts, bodies, strict=True)
    ]


def _cuts(groups: list[Any], pieces: int) -> list[tuple[int, int]]:
    """[a, b) ranges splitting len(groups) records into about `pieces` equal parts, each cut
    moved to the nearest change of group (device) within half a part, if there is one."""
    n = len(groups)
    pieces = min(pieces, n)
    step = n / pieces
    bounds = [0]
    for i in range(1, pieces):
        ideal = round(i * step)
        bounds.append(min(n, _nearest_boundary(groups, ideal, int(step / 2), bounds[-1])))
    bounds.append(n)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _nearest_boundary(groups: list[Any], ideal: int, reach: int, floor: int) -> int:
    for d in range(reach + 1):
        for at in (ideal - d, ideal + d):
            if floor < at < len(groups) and groups[at] != groups[at - 1]:
                return at
    return max(ideal, floor + 1)
