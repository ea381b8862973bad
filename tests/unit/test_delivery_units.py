"""Secrets, the reference consumer, the disk-failure guard, and the [uplink]/[storage] keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from agent.config import ConfigError, load_config
from agent.config.secrets import SecretError, read_secret, resolve
from agent.core.backoff import Backoff
from agent.store.guard import StoreGuard
from agent.store.outbox import Entry, Outbox
from agent.uplink.consumer import Tracker
from tests.unit.test_config import BASE, write

# -- secrets ---------------------------------------------------------------------------------


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o644)
    with pytest.raises(SecretError, match=rf"{f} is accessible by other users \(mode 0644\)"):
        read_secret(f)
    f.chmod(0o600)
    assert read_secret(f) == "s3cret"


def test_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretError, match="LoadCredential=mqtt-pw"):
        resolve(None, "mqtt-pw")
    (tmp_path / "mqtt-pw").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve(None, "mqtt-pw") == "from-systemd"


def config_with(tmp_path: Path, **uplink: Any) -> Path:
    data = orjson.loads(orjson.dumps(BASE))
    data.setdefault("uplink", {}).update(uplink)
    return write(tmp_path, data)


def test_credentials_come_from_secret_files_with_key_paths(tmp_path: Path) -> None:
    user, pw = tmp_path / "user", tmp_path / "pw"
    user.write_text("gw-1\n")
    pw.write_text("pa55\n")
    user.chmod(0o600)
    pw.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, username_file=str(user), password_file=str(pw)))
    assert "uplink.password_file" in str(info.value) and "chmod 600" in str(info.value)
    pw.chmod(0o600)
    cfg = load_config(config_with(tmp_path, username_file=str(user), password_file=str(pw)))
    assert cfg.uplink.credentials is not None and cfg.uplink.credentials.password == "pa55"
    assert "pa55" not in repr(cfg.uplink)


def test_tls_files_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"uplink\.ca_file: file .* does not exist"):
        load_config(config_with(tmp_path, ca_file=str(tmp_path / "nope.pem")))
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"uplink\.ca_file: .* not a usable CA file"):
        load_config(config_with(tmp_path, ca_file=str(bad)))


def test_default_storage_cap_holds_seven_days(tmp_path: Path) -> None:
    cfg = load_config(config_with(tmp_path))
    per_cycle = sum(len(p.code) + len(p.device) + len(p.key) + 40 for p in cfg.points)
    (bus,) = cfg.buses
    # both: seven days of this config's telemetry at its poll rate, and never under 64 MiB
    assert cfg.storage.max_bytes >= per_cycle * 7 * 86400 / bus.poll_interval
    assert cfg.storage.max_bytes >= 64 << 20


# -- the reference consumer ------------------------------------------------------------------


def msg(stream: str, seqs: list[int], **extra: Any) -> dict[str, Any]:
    if stream == "telemetry":
        records: Any = {"seq": seqs, "value": [1.0] * len(seqs)}
    else:
        records = [{"seq": s, **extra} for s in seqs]
    return {"enterprise": "E", "gateway": "G", "stream": stream, "records": records}


def test_tracker_drops_duplicates_and_reports_gaps_explained_by_drops() -> None:
    t = Tracker()
    assert len(t.feed(msg("telemetry", [1, 2, 3]))) == 3
    assert t.feed(msg("telemetry", [2, 3])) == []  # a resent batch
    t.feed(msg("telemetry", [10, 11]))  # live, while 4..9 are still on their way
    st = t.state("E", "G", "telemetry")
    assert st.duplicates == 2 and st.gaps() == [(4, 9)]
    t.feed(msg("telemetry", [4, 5]))
    drop = {"stream": "telemetry", "seq_first": 6, "seq_last": 9}
    t.feed(msg("event", [1], kind="data_dropped", data=drop))
    assert st.gaps() == [] and st.low == 11 and t.gaps() == {}


def test_tracker_accepts_a_replaced_outbox_jump() -> None:
    t = Tracker()
    t.feed(msg("alarm", [1, 2]))
    t.feed(msg("event", [1], kind="outbox_replaced", data={"next_seq": {"alarm": 10**12}}))
    t.feed(msg("alarm", [10**12]))
    assert t.gaps() == {} and t.state("E", "G", "alarm").low == 10**12


# -- disk full ---------------------------------------------------------------------------------


async def test_guard_keeps_alarms_in_memory_while_the_disk_is_full(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "g.db", 10_000_000)
    await box.open()
    guard = StoreGuard(box)
    try:
        con = box._store.db
        await box._submit(con.execute, "PRAGMA max_page_count=1")  # SQLITE_FULL, like ENOSPC
        await guard.put([Entry("telemetry", 5, b"x" * 50_000, 1.0), Entry("alarm", 1, b"[1]", 1.0)])
        assert guard.error is not None and "disk is full" in guard.error
        assert len(guard.held) == 1 and guard.dropped_records == 5
        await box._submit(con.execute, "PRAGMA max_page_count=1000000")
        guard._next_try = 0.0  # skip the retry pause
        await guard.put([Entry("alarm", 1, b"[2]", 2.0)])
        assert guard.error is None and not guard.held
        stats = await box.stats()
        assert stats.pending_records["alarm"] == 2 and stats.pending_records["event"] == 2
    finally:
        await box.close()


# -- reconnect backoff (tenacity wait strategies) ----------------------------------------------


@pytest.mark.parametrize(("jitter", "low"), [("full", 0.0), ("equal", 0.5)])
def test_backoff_delays_stay_in_their_jitter_band(
    jitter: Literal["full", "equal"], low: float
) -> None:
    b = Backoff(base=0.5, cap=4.0, stable_after=60.0, jitter=jitter)
    for bound in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0] * 50:
        if b.attempt == 6:  # the band of each attempt, many draws: start over
            b = Backoff(base=0.5, cap=4.0, stable_after=60.0, jitter=jitter)
        delay = b.next_delay(now=0.0)
        assert low * bound <= delay <= bound


def test_backoff_starts_over_only_after_a_stable_session() -> None:
    b = Backoff(base=1.0, cap=8.0, stable_after=30.0, jitter="equal")
    for _ in range(3):
        b.next_delay(now=0.0)
    b.connected(now=100.0)
    assert b.next_delay(now=110.0) >= 4.0  # a 10 s session: still backing off (bound 8)
    b.connected(now=200.0)
    assert b.next_delay(now=230.0) <= 1.0  # a 30 s session: from base again
    assert b.attempt == 1
