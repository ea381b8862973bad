"""ingest.wire: the payload checks the central ingest applies before writing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest.gaps import _holes
from ingest.store import _telemetry_text
from ingest.wire import Malformed, parse


def message(stream: str = "telemetry", **over: Any) -> dict[str, Any]:
    records: Any = {
        "seq": [1, 2], "point": ["a", "b"], "device": ["d", "d"], "key": ["a", "b"],
        "ts": [10, 10], "value": [1.5, None], "quality": [0, 1], "unit": ["Pa", "Pa"],
    }  # fmt: skip
    if stream == "event":
        records = [{"seq": 1, "kind": "clock_jump", "ts": 5, "data": {}}]
    doc = {"v": 1, "enterprise": "E", "gateway": "g", "stream": stream, "backfill": False,
           "clock_synced": True, "sent": 1, "records": records}  # fmt: skip
    doc.update(over)
    return doc


def test_parses_the_documented_example() -> None:
    m = parse("dust/E/g/telemetry", orjson.dumps(message()))
    assert (m.enterprise, m.gateway, m.stream, m.count, m.seqs) == (
        "E",
        "g",
        "telemetry",
        2,
        [1, 2],
    )
    assert parse("a/b/E/g/event", orjson.dumps(message("event"))).seqs == [1]


@pytest.mark.parametrize(
    ("topic", "doc", "reason"),
    [
        ("dust/E/g/telemetry", b"{", "json"),
        ("dust/E/g/telemetry", b"[1]", "not an object"),
        ("dust/E/g/status", orjson.dumps(message()), "topic"),
        ("dust/E/other/telemetry", orjson.dumps(message()), "envelope does not match topic"),
        ("dust/E/g/telemetry", orjson.dumps(message(v=2)), "version"),
        ("dust/E/g/telemetry", orjson.dumps(message(backfill="no")), "backfill/sent"),
        ("dust/E/g/telemetry", orjson.dumps(message(records=[])), "telemetry records not columnar"),
        ("dust/E/g/event", orjson.dumps(message("event", records=[{"seq": 1}])), "record fields"),
    ],
)
def test_malformed_messages_name_the_reason(topic: str, doc: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as exc:
        parse(topic, doc)
    assert exc.value.reason == reason


def test_unequal_columns_and_bad_seqs_are_refused() -> None:
    doc = message()
    doc["records"]["unit"] = ["Pa"]
    with pytest.raises(Malformed, match="lengths"):
        parse("dust/E/g/telemetry", orjson.dumps(doc))
    doc = message()
    doc["records"]["seq"] = [0, 1]
    with pytest.raises(Malformed, match="seq"):
        parse("dust/E/g/telemetry", orjson.dumps(doc))


def test_copy_text_escapes_and_nulls() -> None:
    doc = message()
    doc["records"]["point"] = ["a\tb", "c\\d"]
    text = _telemetry_text(7, parse("dust/E/g/telemetry", orjson.dumps(doc)))
    assert text == "7\t1\t10\ta\\tb\t1.5\t0\tf\n7\t2\t10\tc\\\\d\t\\N\t1\tf\n"


def test_holes() -> None:
    assert _holes(10, 20, []) == [(10, 20)]
    assert _holes(10, 20, [10, 11, 15, 20]) == [(12, 14), (16, 19)]
    assert _holes(10, 20, list(range(10, 21))) == []
