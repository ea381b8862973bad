"""The operator channel under abuse: the agent runs as an unprivileged throwaway user; the CLI
runs as root, as an operators-group member and as an outsider; the socket path is occupied
by junk; requests are garbage, oversize, slow, non-finite or huge. After each, the agent still
polls and publishes (new telemetry at the broker) and the CLI prints no traceback."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import orjson
import pytest

from firmware_sim.harness import Broker
from tests.adversarial.plant import ALARM, Plant, plant, read_line
from tests.e2e import wait_for
from tests.unit.test_payload import check

pytestmark = pytest.mark.integration


def _no_traceback(out: object) -> None:
    text = f"{getattr(out, 'stdout', '')}{getattr(out, 'stderr', '')}"
    assert "Traceback" not in text, text


def test_sudo_ack_against_an_unprivileged_agent_journals_the_os_user(broker: Broker) -> None:
    with plant(broker) as p:
        p.alarm_active()
        out = p.cli(None, "ack", ALARM, "--by", "张三 (shift B)", "--note", "checked")
        assert out.returncode == 0, out
        assert "recorded in the journal" in out.stdout
        acks = [r for r in p.collector.alarm_records() if r["transition"] == "ack"]
        assert acks, "the ack reached the broker before the CLI returned"
        ack = acks[0]
        assert ack["by"] == "张三 (shift B)" and ack["os_user"] == "root" and ack["os_uid"] == 0
        assert ack["note"] == "checked"
        assert isinstance(ack["journal"]["lines"], int) and len(ack["journal"]["hash"]) == 64
        for body in p.collector.stream("alarm"):  # os_user, os_uid and journal are documented
            check(orjson.dumps(body), "alarm")
        # nothing the root CLI did left a root-owned file in the agent's state directory
        assert p.owners() == {p.users.agent}, p.owners()
        # an operators-group member reads the journal (no secrets, no root) and can verify
        # the chain against the anchor the platform received with the ack
        journal = p.cli(p.users.member, "alarms", "--json")
        assert journal.returncode == 0, journal
        lines = [orjson.loads(x) for x in journal.stdout.splitlines()]
        assert any(r["transition"] == "ack" and r["os_user"] == "root" for r in lines)
        anchor = f"{ack['journal']['lines']}:{ack['journal']['hash']}"
        verify = p.cli(p.users.member, "alarms", "--verify", "--anchor", anchor)
        assert verify.returncode == 0 and "matches the anchor" in verify.stdout, verify
        # the health message carries the chain head too (an anchor at least as new)
        wait_for(
            lambda: any(
                (h.get("journal") or {}).get("lines", 0) >= ack["journal"]["lines"]
                for h in p.collector.stream("health")
            ),
            30,
            "a health message with the journal's chain head",
        )
        # a second ack of the same alarm is refused by the agent, with the reason
        member = p.cli(p.users.member, "ack", ALARM, "--by", "li")
        assert member.returncode == 0, member  # already acked: acking again is harmless
        outsider = p.cli(p.users.outsider, "ack", ALARM, "--by", "mallory")
        assert outsider.returncode == 69 and "permission denied" in outsider.stderr, outsider
        _no_traceback(outsider)
        p.still_publishing()


def _junk(kind: str) -> object:
    def prepare(state: Path) -> None:
        path = state / "operator.sock"
        if kind == "directory":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            path.symlink_to("/dev/zero")
        else:
            path.write_bytes(b"junk")

    return prepare


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink", "file"])
def test_junk_at_the_socket_path_is_left_alone_and_reported(broker: Broker, kind: str) -> None:
    with plant(broker, prepare=_junk(kind)) as p:
        p.agent.wait_log("operator socket unavailable: .* is a ")
        wait_for(
            lambda: any(
                e["kind"] == "operator_socket_unavailable"
                for b in p.collector.stream("event")
                for e in b["records"]
            ),
            20,
            "the operator_socket_unavailable event",
        )
        p.still_publishing()
        out = p.cli(None, "ack", ALARM, "--by", "zhang")
        assert out.returncode == 69 and "is not a socket: remove it" in out.stderr, out
        _no_traceback(out)
        _remove(p.socket)  # the operator cleans up; the agent retries on its own
        wait_for(p.socket.is_socket, 20, "the socket recreated by the agent")
        p.alarm_active()
        again = p.cli(None, "ack", ALARM, "--by", "zhang")
        assert again.returncode == 0, again
        p.still_publishing()


def _refused(p: Plant, body: bytes, reason: str) -> None:
    answer = p.request(body)
    assert answer["ok"] is False and reason in answer["error"], (body[:80], answer)


def test_malformed_requests_are_refused_with_a_reason_and_change_nothing(broker: Broker) -> None:
    with plant(broker) as p:
        p.alarm_active()
        req = {"action": "shelve", "alarm_id": ALARM, "by": "zhang"}
        cases: list[tuple[bytes, str]] = [
            (b"\x00\xffgarbage\n", "not JSON"),
            (b"[1, 2]\n", "JSON object"),
            (b'{"action": "rm -rf"}\n', "'action' must be"),
            (orjson.dumps({**req, "for": 60, "ts": "nan"}) + b"\n", "unknown field"),
            (orjson.dumps({**req, "until": "inf", "for": 60}) + b"\n", "unknown field"),
            (orjson.dumps({**req, "for": "nan"}) + b"\n", "duration in seconds"),
            (b'{"action":"shelve","alarm_id":"X","by":"z","for":1e999}\n', "not JSON"),
            (b'{"action":"shelve","alarm_id":"X","by":"z","for":NaN}\n', "not JSON"),
            (orjson.dumps({**req, "for": -5}) + b"\n", "above 0"),
            (orjson.dumps({**req, "for": 1e308}) + b"\n", "longer than the maximum"),
            (orjson.dumps({**req, "for": 86401}) + b"\n", "longer than the maximum"),
            (orjson.dumps({**req, "for": True}) + b"\n", "duration in seconds"),
            (orjson.dumps({**req, "for": 60, "by": "x" * 65}) + b"\n", "longer than 64"),
            (orjson.dumps({**req, "for": 60, "by": "a\x1b[31mb"}) + b"\n", "control"),
            (orjson.dumps({**req, "for": 60, "by": "   "}) + b"\n", "'by' is required"),
            (
                orjson.dumps({"action": "ack", "alarm_id": ALARM, "by": "z", "for": 5}) + b"\n",
                "only for shelve",
            ),
            (
                orjson.dumps({"action": "ack", "alarm_id": "nope:high", "by": "z"}) + b"\n",
                "no alarm",
            ),
            (b"{" + b" " * 5000 + b"}\n", "larger than 4096"),
        ]
        for body, reason in cases:
            _refused(p, body, reason)
        # a request without its newline, the writing side then closed
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(p.socket))
            s.sendall(orjson.dumps({**req, "for": 60}))
            s.shutdown(socket.SHUT_WR)
            assert b"incomplete request" in read_line(s)
        # nothing was shelved or acknowledged by any of them
        operator = [r for r in p.collector.alarm_records() if r["transition"] in ("ack", "shelve")]
        assert operator == [], operator
        p.still_publishing()


def test_slow_clients_time_out_and_cannot_block_the_agent(broker: Broker) -> None:
    with plant(broker) as p:
        silent = []
        for _ in range(12):  # more than MAX_CLIENTS, all silent
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            s.connect(str(p.socket))
            silent.append(s)
        try:
            started = time.monotonic()
            p.still_publishing("telemetry while 12 clients hold the socket")
            answers = [orjson.loads(read_line(s)) for s in silent]
            waited = time.monotonic() - started
        finally:
            for s in silent:
                s.close()
        errors = [a["error"] for a in answers]
        assert sum("busy" in e for e in errors) >= 4, errors
        assert sum("no complete request line within 5 s" in e for e in errors) >= 1, errors
        assert waited < 12, waited
        p.alarm_active()
        ok = p.cli(None, "ack", ALARM, "--by", "zhang")
        assert ok.returncode == 0, ok
        p.still_publishing()


def test_cli_refusals_are_clear_and_change_nothing(broker: Broker) -> None:
    with plant(broker) as p:
        p.alarm_active()
        huge = p.cli(None, "shelve", ALARM, "--for", "9999999999999d", "--by", "zhang")
        assert huge.returncode == 1 and "longer than the maximum 86400 s" in huge.stderr, huge
        day = p.cli(None, "shelve", ALARM, "--for", "25h", "--by", "zhang")
        assert day.returncode == 1 and "operator.max_shelve" in day.stderr, day
        for bad in ("9" * 400 + "d", "inf", "nan", "-2h", "0s", "2 fortnights"):
            out = p.cli(None, "shelve", ALARM, "--for", bad, "--by", "zhang")
            assert out.returncode == 2 and "argument --for" in out.stderr, (bad, out)
            _no_traceback(out)
        for by in ("", "x" * 65, "a\tb"):
            out = p.cli(None, "ack", ALARM, "--by", by)
            assert out.returncode == 2 and "--by" in out.stderr, (by, out)
            _no_traceback(out)
        unknown = p.cli(None, "unshelve", ALARM, "--by", "zhang")
        assert unknown.returncode == 1 and "is not shelved" in unknown.stderr, unknown
        for out in (huge, day, unknown):
            _no_traceback(out)
        assert not [r for r in p.collector.alarm_records() if r["transition"] == "shelve"]
        ok = p.cli(p.users.member, "shelve", ALARM, "--for", "2h", "--by", "li", "--note", "fan")
        assert ok.returncode == 0, ok
        shelves = [r for r in p.collector.alarm_records() if r["transition"] == "shelve"]
        assert shelves and shelves[0]["os_user"] == p.users.member, shelves
        assert 7100_000 < shelves[0]["until"] - shelves[0]["ts"] <= 7200_000 + 1000
        back = p.cli(None, "unshelve", ALARM, "--by", "zhang")
        assert back.returncode == 0, back
        p.still_publishing()
