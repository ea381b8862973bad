"""The operator channel under abuse: the agent runs as an unprivileged throwaway user; the CLI
runs as root, as an operators-group member and as an outsider; the socket path is occupied
by junk; requests are garbage, oversize, slow, non-finite or huge. After each, the agent still
polls and publishes (new telemetry at the broker) and the CLI prints no traceback."""

from __future__ import annotations

import orjson
import pytest

from firmware_sim.harness import Broker
from tests.adversarial.plant import ALARM, plant

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
        # a second ack of the same alarm is refused by the agent, with the reason
        member = p.cli(p.users.member, "ack", ALARM, "--by", "li")
        assert member.returncode == 0, member  # already acked: acking again is harmless
        outsider = p.cli(p.users.outsider, "ack", ALARM, "--by", "mallory")
        assert outsider.returncode == 69 and "permission denied" in outsider.stderr, outsider
        _no_traceback(outsider)
        p.still_publishing()
