"""Alarm journal: durability format, rotation, torn lines, and the alarms report."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent.cli.alarms import alarms_report, display_width, fit, parse_since
from agent.core.model import AlarmEvent, Level, Transition
from agent.store.journal import GENESIS, Journal, journal_files, read_journal, verify_journal

T0 = 1_714_521_600.0  # 2024-05-01 00:00:00 UTC = 08:00 in Asia/Shanghai


@pytest.fixture(autouse=True)
def shanghai_time() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def event(
    n: int, transition: Transition = "raise", point: str = "P001", ts: float = T0
) -> AlarmEvent:
    level: Level | None = None if transition == "clear" else "alarm"
    return AlarmEvent(
        alarm_id=f"{point}:high",
        point=point,
        device="DC-1",
        key="hopper_temp",
        direction="high",
        transition=transition,
        level=level,
        prev_level=None if transition == "raise" else "alarm",
        value=72.5 + n,
        threshold=70.0,
        unit="°C",
        ts=ts,
        text_zh=f"DC-1 灰斗温度 报警：{72.5 + n:g} °C ≥ 70 °C",
        text_en=f"DC-1 ash-hopper temperature ALARM: {72.5 + n:g} °C ≥ 70 °C (high)",
    )


def test_append_writes_records_with_logged_time(tmp_path: Path) -> None:
    with Journal(tmp_path, max_bytes=1 << 20, keep=2) as j:
        j.append([event(0), event(1, "clear")])
        j.append([])
    lines = (tmp_path / "journal.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert first == {
        **event(0).to_record(),
        "logged": first["logged"],
        "n": 1,
        "prev": GENESIS,
    }
    assert abs(first["logged"] / 1000 - time.time()) < 60
    assert [r["transition"] for r in read_journal(tmp_path)] == ["raise", "clear"]


def test_rotation_is_bounded_and_reads_back_in_order(tmp_path: Path) -> None:
    record = {
        **event(0).to_record(),
        "logged": int(time.time() * 1000),
        "n": 10,
        "prev": GENESIS,
    }
    line = len(orjson.dumps(record)) + 1
    j = Journal(tmp_path, max_bytes=3 * line + 5, keep=2)
    for n in range(20):
        j.append([event(n, ts=T0 + n)])
    j.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["journal.1.jsonl", "journal.2.jsonl", "journal.jsonl"]
    assert all(p.stat().st_size <= j.max_bytes for p in tmp_path.iterdir())
    assert [p.name for p in journal_files(tmp_path)] == [
        "journal.2.jsonl",
        "journal.1.jsonl",
        "journal.jsonl",
    ]
    # 20 events at 3 per file: the newest 2 in the current file, 3 + 3 in the rotated ones
    assert [r["ts"] for r in read_journal(tmp_path)] == [
        int((T0 + n) * 1000) for n in range(12, 20)
    ]


def test_keep_zero_keeps_only_the_current_file(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=10, keep=0)  # every line is bigger than the cap
    for n in range(3):
        j.append([event(n)])
    j.close()
    assert [p.name for p in tmp_path.iterdir()] == ["journal.jsonl"]
    assert len(list(read_journal(tmp_path))) == 1


def test_torn_last_line_is_skipped_and_sealed_on_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path, max_bytes=1 << 20, keep=1) as j:
        j.append([event(0)])
    path = tmp_path / "journal.jsonl"
    with path.open("ab") as f:
        f.write(b'{"alarm_id": "P001:high", "transition": "cle')  # power cut mid-write
    assert [r["transition"] for r in read_journal(tmp_path)] == ["raise"]
    with Journal(tmp_path, max_bytes=1 << 20, keep=1) as j:
        j.append([event(1, "clear")])
    assert [r["transition"] for r in read_journal(tmp_path)] == ["raise", "clear"]


def test_read_journal_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list(read_journal(tmp_path / "nope")) == []


# --- report --------------------------------------------------------------------------------


def test_report_empty_or_missing_journal(tmp_path: Path) -> None:
    msg = alarms_report(tmp_path / "journal", since=None, active_only=False)
    assert msg == f"no alarm transitions recorded in {tmp_path / 'journal'} yet"


def _journal(tmp_path: Path) -> Path:
    with Journal(tmp_path, max_bytes=1 << 20, keep=1) as j:
        j.append([event(0, "raise", "P001", T0), event(1, "raise", "P002", T0 + 60)])
        j.append([event(2, "clear", "P001", T0 + 3600)])
        j.append([event(3, "raise", "P003", T0 + 7200)])
    return tmp_path


def test_report_table_with_local_time_and_aligned_chinese(tmp_path: Path) -> None:
    out = alarms_report(_journal(tmp_path), since=None, active_only=False, width=300)
    lines = out.splitlines()
    assert lines[0].split() == [
        "time",
        "device",
        "point",
        "transition",
        "level",
        "value",
        "threshold",
        "text",
    ]
    assert lines[1].startswith("2024-05-01 08:00:00  DC-1    P001   raise       alarm  72.5 °C")
    assert "P001   clear       —      74.5 °C  70 °C" in lines[3]
    # the English column starts at the same terminal column on every row
    starts = {display_width(line[: line.index("DC-1 ash")]) for line in lines[1:5]}
    assert len(starts) == 1
    assert lines[-1] == "4 transitions"


def test_report_fits_a_narrow_terminal(tmp_path: Path) -> None:
    out = alarms_report(_journal(tmp_path), since=None, active_only=False, width=100)
    assert all(display_width(line) <= 100 for line in out.splitlines())
    assert "…" in out


def test_report_active_only_and_since(tmp_path: Path) -> None:
    d = _journal(tmp_path)
    now = T0 + 7200 + 120
    active = alarms_report(d, since=None, active_only=True, now=now, width=300)
    assert [line.split()[3] for line in active.splitlines()[1:-1]] == ["P002", "P003"]
    assert active.splitlines()[-1] == "2 active alarms"
    recent = alarms_report(d, since="1h", active_only=False, now=now, width=300)
    assert [line.split()[3] for line in recent.splitlines()[1:-1]] == ["P003"]
    assert recent.splitlines()[-1] == "1 transition since 1h"
    by_date = alarms_report(d, since="2024-05-01T09:00", active_only=False, width=300)
    assert [line.split()[3] for line in by_date.splitlines()[1:-1]] == ["P001", "P003"]
    none = alarms_report(d, since="1m", active_only=True, now=now)
    assert none == f"no active alarms since 1m in {d}"


def test_parse_since() -> None:
    now = T0
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2024-05-01", now) == T0 - 8 * 3600  # local midnight
    assert parse_since("2024-05-01 08:00:00", now) == T0
    assert parse_since("2024-05-01T00:00:00+00:00", now) == T0
    for bad in ("yesterday", "-5m", "5 parsecs", ""):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad, now)


def test_fit_counts_chinese_as_double_width() -> None:
    assert display_width("灰斗温度 ok") == 11
    assert fit("灰斗温度", 5) == "灰斗…"
    assert display_width(fit("灰斗温度", 5)) == 5
    assert fit("ab", 4) == "ab  "


def test_hash_chain_verifies_across_rotation_and_shows_edits_and_removals(tmp_path: Path) -> None:
    line = len(orjson.dumps({**event(0).to_record(), "logged": 0, "n": 10, "prev": GENESIS})) + 1
    j = Journal(tmp_path, max_bytes=3 * line + 5, keep=5)
    for n in range(10):
        j.append([event(n, ts=T0 + n)])
    j.close()
    # reopening continues the chain from the last line on disk
    with Journal(tmp_path, max_bytes=3 * line + 5, keep=5) as j2:
        j2.append([event(10, ts=T0 + 10)])
    ok = verify_journal(tmp_path)
    assert ok.ok and ok.lines == 11 and ok.files >= 3, ok
    # edit one value in a rotated file: the next line no longer follows
    rotated = tmp_path / "journal.1.jsonl"
    lines = rotated.read_bytes().splitlines()
    original = lines[0]
    lines[0] = re.sub(rb'"value":[0-9.]+', b'"value":60.0', original)
    assert lines[0] != original
    rotated.write_bytes(b"\n".join(lines) + b"\n")
    edited = verify_journal(tmp_path)
    assert not edited.ok and "journal.1.jsonl line 2" in edited.breaks[0], edited
    # remove a line from the current file
    lines[0] = original
    rotated.write_bytes(b"\n".join(lines[:1] + lines[2:]) + b"\n")
    removed = verify_journal(tmp_path)
    assert not removed.ok and "removed or edited" in removed.breaks[0]
