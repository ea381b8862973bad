"""Files and messages that misbehave: corrupt outbox copies piling up beside the database,
and malformed messages on the reference consumer's topics."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest

from agent.store import schema
from agent.store.outbox import Outbox
from agent.uplink.consumer import Tracker

MIB = 1024 * 1024


def corrupt_copy(directory: Path, epoch: int, size: int, *, wal: int = 0) -> Path:
    copy = directory / f"outbox.db.corrupt-{epoch}"
    copy.write_bytes(os.urandom(64) * (size // 64))
    if wal:
        copy.with_name(copy.name + "-wal").write_bytes(b"\0" * wal)
    return copy


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)


async def test_corrupt_copies_are_pruned_oldest_first_and_count_against_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for epoch in range(1000, 1006):  # six copies of 1 MiB, the oldest with a -wal
        corrupt_copy(tmp_path, epoch, MIB, wal=4096 if epoch == 1000 else 0)
    (tmp_path / "outbox.db.corrupt-notanepoch").write_bytes(b"x")  # not ours: left alone
    box = Outbox(tmp_path / "outbox.db", 16 * MIB)
    await box.open()
    try:
        kept = names(tmp_path)
        assert kept == [
            "outbox.db.corrupt-1003",
            "outbox.db.corrupt-1004",
            "outbox.db.corrupt-1005",
            "outbox.db.corrupt-notanepoch",
        ]
        assert box._store.corrupt_bytes == 3 * MIB
        assert box._store.cap == 13 * MIB
    finally:
        await box.close()
    lines = [r.getMessage() for r in caplog.records if "corrupt outbox cop" in r.getMessage()]
    assert len(lines) == 1 and "deleted 3" in lines[0]


async def test_copies_beyond_a_quarter_of_the_cap_are_deleted(tmp_path: Path) -> None:
    corrupt_copy(tmp_path, 2000, 3 * MIB)  # older
    corrupt_copy(tmp_path, 2001, 2 * MIB)  # newest: kept within 25 % of 10 MiB
    total, gone = schema.prune_corrupt(tmp_path / "outbox.db", 10 * MIB)
    assert total == 2 * MIB and [p.name for p in gone] == ["outbox.db.corrupt-2000"]


async def test_a_database_corrupt_again_and_again_leaves_a_bounded_pile(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    for round_ in range(1, 7):
        path.write_bytes(b"not a database" * 1000)
        box = Outbox(path, 64 * MIB)
        await box.open()
        await box.close()
        # give the fresh copy a distinct, increasing epoch (no waiting a second per round)
        _renumber(tmp_path, round_)
    copies = [n for n in names(tmp_path) if not n.endswith(("-wal", "-shm"))]
    assert copies == ["outbox.db.corrupt-4", "outbox.db.corrupt-5", "outbox.db.corrupt-6"]


def _renumber(directory: Path, round_: int) -> None:
    (fresh,) = [c for c in directory.glob("outbox.db.corrupt-*") if _epoch(c) > 10**9]
    fresh.rename(directory / f"outbox.db.corrupt-{round_}")


def _epoch(p: Path) -> int:
    tail = p.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# -- the reference consumer ------------------------------------------------------------------


def msg(**kw: object) -> bytes:
    doc: dict[str, object] = {"enterprise": "E", "gateway": "G", "stream": "alarm"}
    doc.update(kw)
    return orjson.dumps(doc)


MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe not json", "not_json"),
    (b"[1, 2, 3]", "bad_envelope"),
    (b'"just a string"', "bad_envelope"),
    (msg(stream=None), "bad_envelope"),
    (msg(stream="nope", records=[]), "bad_envelope"),
    (msg(gateway=7, records=[]), "bad_envelope"),
    (msg(), "bad_records"),
    (msg(records="x"), "bad_records"),
    (msg(records=[1, 2]), "bad_records"),
    (msg(stream="telemetry", records={"seq": [1, 2], "v": [1]}), "bad_records"),
    (msg(stream="telemetry", records={"seq": 5}), "bad_records"),
    (msg(records=[{"seq": "1"}]), "bad_seq"),
    (msg(records=[{"seq": 1.5}]), "bad_seq"),
    (msg(records=[{"seq": True}]), "bad_seq"),
    (msg(records=[{"seq": -3}]), "bad_seq"),
    (msg(records=[{"seq": 2**63}]), "bad_seq"),
    (msg(records=[{"nope": 1}]), "bad_seq"),
    (msg(stream="event", records=[{"seq": 1, "data": [1]}]), "bad_event"),
    (
        msg(stream="event", records=[{"seq": 1, "kind": "data_dropped", "data": {"seq_first": 9}}]),
        "bad_seq",
    ),
    (
        msg(
            stream="event",
            records=[{"seq": 1, "kind": "data_dropped", "data": {"seq_first": 9, "seq_last": 2}}],
        ),
        "bad_event",
    ),
    (
        msg(
            stream="event", records=[{"seq": 1, "kind": "outbox_replaced", "data": {"next_seq": 3}}]
        ),
        "bad_event",
    ),
    (
        msg(
            stream="event",
            records=[{"seq": 1, "kind": "outbox_replaced", "data": {"next_seq": {"alarm": "x"}}}],
        ),
        "bad_seq",
    ),
]


@pytest.mark.parametrize(("payload", "kind"), MALFORMED)
def test_consumer_refuses_each_malformed_message_and_keeps_going(payload: bytes, kind: str) -> None:
    t = Tracker()
    assert t.accept(msg(records=[{"seq": 1}])) == [{"seq": 1}]
    assert t.accept(payload) == []
    assert t.faults == {kind: 1}
    assert t.accept(msg(records=[{"seq": 2}])) == [{"seq": 2}]  # still consuming
    assert t.report()["E/G/alarm"]["complete_up_to"] == 2


def test_consumer_logs_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    t = Tracker()
    for payload, _ in MALFORMED * 3:
        t.accept(payload)
    kinds = {k for _, k in MALFORMED}
    assert sum(t.faults.values()) == 3 * len(MALFORMED)
    lines = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(lines) == len(kinds)


def test_a_malformed_message_changes_no_state() -> None:
    t = Tracker()
    half_bad = msg(records=[{"seq": 1}, {"seq": "two"}])
    assert t.accept(half_bad) == [] and t.streams == {}
