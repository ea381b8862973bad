"""agent.service.delivery: a stall only when records wait and none is acknowledged, with the
reason; `dust-agent status` shows the watchdog only where one exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.cli.status import to_table
from agent.core.model import UplinkSpec
from agent.service.delivery import STALL_ENV, DeliveryWatch, stall_limit


@dataclass
class Stats:
    connected: bool = True
    records: int = 0
    published: int = 0
    messages: int = 0
    last_error: str = ""


def test_progress_idle_and_the_two_kinds_of_stall() -> None:
    w, s = DeliveryWatch(limit=10.0), Stats()
    assert w.check(s, pending=5, now=0.0) is None
    s.records = 100
    assert w.check(s, pending=5, now=9.0) is None
    assert w.check(s, pending=0, now=30.0) is None  # nothing to send: not a stall
    assert w.check(s, pending=0, now=60.0) is None
    assert w.check(s, pending=7, now=65.0) is None  # pending again: counts from the last idle
    s.published = 3
    why = w.check(s, pending=7, now=71.0)
    assert why is not None and why.startswith("acknowledgements not coming"), why
    assert "3 message(s) unacknowledged" in why and "11 s" in why
    s.connected, s.last_error = False, "connection refused"
    why = w.check(s, pending=9, now=80.0)
    assert why is not None and why.startswith("broker down") and "connection refused" in why
    assert w.snapshot(now=80.0) == {"stalled": why, "silent_s": 20.0, "stall_after_s": 10.0}
    s.records = 101  # an acknowledgement clears it
    assert w.check(s, pending=9, now=81.0) is None
    assert w.snapshot(now=81.0)["stalled"] is None


def test_stall_limit_derived_or_from_the_environment() -> None:
    spec = UplinkSpec(host="127.0.0.1", port=1883, topic_prefix="dust", client_id="c")
    derived = 2 * (spec.backoff_cap + spec.publish_timeout + spec.keepalive) + 30
    assert stall_limit(spec, {}) == derived
    assert stall_limit(spec, {STALL_ENV: "6"}) == 6.0
    assert stall_limit(spec, {STALL_ENV: "soon"}) == derived


def doc(watchdog: Any, stalled: str | None) -> dict[str, Any]:
    return {
        "written": 0,
        "agent": {"state": "running", "version": "x", "watchdog": watchdog, "uptime_s": 900},
        "uplink": {"target": "mqtt://b", "connected": True, "delivery": {"stalled": stalled}},
        "outbox": {"db_bytes": 3 * 2**20, "used_bytes": 2**20},
    }


def test_status_table_shows_the_watchdog_only_where_one_exists() -> None:
    table = to_table(doc(None, None), now=1.0)
    assert "watchdog" not in table and "STALLED" not in table
    assert "file 3.0 MiB (1.0 MiB used)" in table
    table = to_table(doc({"interval_s": 15.0, "stalled": None}, None), now=1.0)
    assert "watchdog ok" in table and "STALLED" not in table
    table = to_table(doc({"interval_s": 15.0, "stalled": "bus 'a' silent"}, "broker down"), 1.0)
    assert "watchdog STALLED: bus 'a' silent" in table
    assert "delivery STALLED: broker down" in table
