"""Operator actions in the engine validate, then change state; the saved alarm state is
validated at start; the journal's chain head, HMAC and anchors."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from agent.core.model import ThresholdRule
from agent.rules import AlarmLookupError, RuleEngine
from agent.service.ack import STATE_FILE, AlarmOps, load_state, state_problem
from agent.store.journal import GENESIS, ChainHead, Journal, digest, stamp, verify_journal
from tests.unit.test_journal import event
from tests.unit.test_rule_kinds import FAST, frame, spec

ID = "P000:high"


def active_engine() -> RuleEngine:
    eng = RuleEngine([spec(0, ThresholdRule(high_alarm=10.0, on_delay=0, off_delay=0))])
    assert eng.step(frame([0], [0.0], [20.0]))
    return eng


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_times_are_refused_with_no_change(bad: float) -> None:
    eng = active_engine()
    before = eng.snapshot()
    calls: list[Callable[[], object]] = [
        lambda: eng.ack(ID, "z", bad),
        lambda: eng.shelve(ID, bad, "z", 1.0),
        lambda: eng.shelve(ID, 100.0, "z", bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="finite"):
            call()
        assert eng.snapshot() == before
    assert eng.active()[0].shelved_until is None and not eng.active()[0].acked


def test_shelve_bounds_and_critical_alarms() -> None:
    eng = active_engine()
    before = eng.snapshot()
    with pytest.raises(ValueError, match="longer than the maximum 86400 s"):
        eng.shelve(ID, 1.0 + 9999999999999 * 86400, "z", 1.0, max_duration=86400)
    with pytest.raises(ValueError, match="not after now"):
        eng.shelve(ID, 0.5, "z", 1.0)
    assert eng.snapshot() == before
    ok = eng.shelve(ID, 3601.0, "z", 1.0, max_duration=86400, who={"os_user": "root"})
    assert ok[0].extra["until"] == 3601000 and ok[0].extra["os_user"] == "root"
    # a state point with a critical level: refused unless the config allows it
    crit = RuleEngine([spec(0, FAST, state_alarm=(2,), state_critical=(1,))])
    with pytest.raises(ValueError, match="critical"):
        crit.shelve("P000:state", 100.0, "z", 1.0, allow_critical=False)
    assert crit.snapshot() == {}
    assert crit.shelve("P000:state", 100.0, "z", 1.0, allow_critical=True)


def test_unknown_and_inactive_ids_change_nothing() -> None:
    eng = active_engine()
    before = eng.snapshot()
    calls: list[Callable[[], object]] = [
        lambda: eng.ack("NOPE:high", "z", 1.0),
        lambda: eng.unshelve(ID, "z", 1.0),
        lambda: eng.shelve("NOPE:high", 5.0, "z", 1.0),
    ]
    for call in calls:
        with pytest.raises(AlarmLookupError):
            call()
    assert eng.snapshot() == before


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],
        {"v": 1, "alarms": [1]},
        {"alarms": {"P000:high": 5}},
        {"alarms": {"P000:high": {"published": 7}}},
        {"alarms": {"P000:high": {"published": True}}},
        {"alarms": {"P000:high": {"published": 2, "shelved_until": "inf"}}},
        {"alarms": {"P000:high": {"published": 2, "since": "yesterday"}}},
        {"alarms": {"P000:high": {"published": 2, "acked": "yes"}}},
        {"alarms": {"P000:high": {"published": 2, "extra": 1}}},
    ],
)
def test_wrong_shaped_state_is_moved_aside_with_an_event(tmp_path: Path, data: object) -> None:
    text = orjson.dumps(data)
    (tmp_path / STATE_FILE).write_bytes(text)
    assert state_problem(orjson.loads(text)) is not None
    ops = AlarmOps(tmp_path, active_engine)
    ops.restore()  # no exception: the agent starts
    assert not (tmp_path / STATE_FILE).exists()
    moved = [p.name for p in tmp_path.iterdir()]
    assert len(moved) == 1 and re.fullmatch(r"alarm_state\.json\.bad-\d+", moved[0]), moved
    (entry,) = ops.drain()
    assert b"alarm_state_rejected" in entry.body and b"moved_to" in entry.body


def test_valid_state_round_trips(tmp_path: Path) -> None:
    eng = active_engine()
    ops = AlarmOps(tmp_path, lambda: eng)
    ops.save()
    saved, rejected = load_state(tmp_path)
    assert rejected is None and saved == eng.snapshot()


def test_anchor_and_hmac_detect_a_full_rewrite_and_a_cut(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    with Journal(d, 1 << 20, 3) as j:
        heads = j.append([event(n) for n in range(5)])
    assert [h.lines for h in heads] == [1, 2, 3, 4, 5] and j.head == heads[-1]
    stamped = stamp([event(0)], heads[:1])
    assert stamped[0].to_record()["journal"] == {"lines": 1, "hash": heads[0].hash}
    anchor = heads[3]
    assert ChainHead.parse(str(anchor)) == anchor
    v = verify_journal(d, anchor=anchor)
    assert v.ok and v.checked and v.anchor_matched and v.head == heads[-1]
    # a full rewrite with recomputed hashes passes without an anchor, fails with one
    forged = tmp_path / "forged"
    with Journal(forged, 1 << 20, 3) as j2:
        j2.append([event(n + (10 if n == 1 else 0)) for n in range(5)])
    (d / "journal.jsonl").write_bytes((forged / "journal.jsonl").read_bytes())
    assert verify_journal(d).ok
    assert not verify_journal(d, anchor=anchor).ok
    # lines cut off the end up to the anchor
    lines = (forged / "journal.jsonl").read_bytes().splitlines(keepends=True)
    (d / "journal.jsonl").write_bytes(b"".join(lines[:2]))
    cut = verify_journal(d, anchor=anchor)
    assert not cut.ok and "ends at line 2" in cut.breaks[0]
    # keyed: the chain cannot be recomputed without the key, and is unchecked without it
    k = tmp_path / "keyed"
    with Journal(k, 1 << 20, 3, hmac_key=b"secret") as j3:
        kh = j3.append([event(n) for n in range(3)])
    first = orjson.loads((k / "journal.jsonl").read_bytes().splitlines()[0])
    assert first["mac"] == "hmac-sha256" and first["prev"] == GENESIS
    assert verify_journal(k, key=b"secret", anchor=kh[-1]).anchor_matched
    assert not verify_journal(k, key=b"guess").ok
    assert not verify_journal(k).checked
    assert kh[-1].hash == digest((k / "journal.jsonl").read_bytes().splitlines()[-1], b"secret")
    with pytest.raises(ValueError, match="LINES:HASH"):
        ChainHead.parse("12:nothex")


def test_journal_files_are_shared_with_the_operators_group(tmp_path: Path) -> None:
    old = tmp_path / "journal.1.jsonl"  # written before an upgrade: private
    old.write_bytes(b"{}\n")
    old.chmod(0o600)
    gid = os.getgid() + 4242  # any gid will do for root; the group need not exist
    with Journal(tmp_path, 1 << 20, 3, gid=gid) as j:
        j.append([event(0)])
    for path in (tmp_path, old, tmp_path / "journal.jsonl"):
        st = path.stat()
        assert st.st_gid == gid, path
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o2750
