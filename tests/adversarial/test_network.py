"""Network input that misbehaves: platform replies (size, bombs, trickles, control
characters), URL credentials, a rogue MQTT broker, and transport-security config."""

from __future__ import annotations

import logging
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main as cli_main
from agent.config.errors import ConfigError
from agent.config.load import load_config
from agent.core.model import TlsSpec
from agent.core.platformspec import PlatformSpec
from agent.core.redact import printable, redact_url
from agent.uplink.contract import UplinkError
from agent.uplink.mqtt import MqttUplink
from agent.uplink.mqtt import tls_context as mqtt_tls_context
from agent.uplink.platforms import hebei
from agent.uplink.platforms.http import HttpUplink, PlatformRefused, ReplyRefused, tls_context
from tests.adversarial.rogue import RogueBroker, RogueHttp, until
from tests.integration.test_forwarder import PREFIX, SITE
from tests.integration.test_forwarder import spec as mqtt_spec
from tests.unit.test_delivery_units import config_with as uplink_config
from tests.unit.test_platforms import config as platform_config

pytestmark = pytest.mark.integration


def spec(url: str, **kw: Any) -> PlatformSpec:
    base: dict[str, Any] = {
        "name": "hebei",
        "profile": "hebei_v1_1",
        "url": url,
        "enterprise_code": "130100000001",
        "gateway_code": "13010000000101",
        "key": b"k3y-8byt",
        "iv": b"1v-8byte",
        "telemetry": hebei.RTS,
        "alarm": hebei.EVENTS,
        "codes": frozenset({"P1"}),
        "decimals": {},
        "timeout": 1.0,
    }
    return PlatformSpec(**(base | kw))


@pytest.fixture
async def server() -> AsyncIterator[RogueHttp]:
    srv = RogueHttp()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def post(srv: RogueHttp, **kw: Any) -> UplinkError | None:
    up = HttpUplink(spec(kw.pop("url", srv.url), **kw), hebei.seal)
    await up.connect()
    try:
        await up.publish("rtsData", b'{"data": []}')
    except UplinkError as exc:
        return exc
    finally:
        await up.close(clean=True)
    return None


async def test_ok_reply_is_accepted(server: RogueHttp) -> None:
    assert await post(server) is None and server.requests == 1


@pytest.mark.parametrize("mode", ["huge", "huge-length", "bomb"])
async def test_oversized_reply_is_a_refused_delivery_in_bounded_memory(
    server: RogueHttp, mode: str
) -> None:
    server.mode = mode
    tracemalloc.start()
    try:
        exc = await post(server, timeout=5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(exc, ReplyRefused), exc
    assert "KiB" in str(exc) or "cap" in str(exc)
    assert "kept and sent again" in str(exc)
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes traced for a {mode} reply"


async def test_trickling_reply_hits_one_deadline(server: RogueHttp) -> None:
    server.mode, server.interval = "trickle", 0.2  # never idle for a whole timeout
    t0 = time.monotonic()
    exc = await post(server, timeout=1.0)
    took = time.monotonic() - t0
    assert isinstance(exc, UplinkError) and "did not answer within 1 s" in str(exc)
    assert took < 2.0, took


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc", "encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd", "corrupt"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,2]", "without the JSON"),
        (b"garbage\r\n\r\n", "lost connection"),
    ],
)
async def test_malformed_replies_are_explained(server: RogueHttp, raw: bytes, reason: str) -> None:
    server.mode, server.raw = "raw", raw
    exc = await post(server)
    assert isinstance(exc, UplinkError) and reason in str(exc), exc


async def test_reply_text_is_escaped_and_cut_in_messages(
    server: RogueHttp, caplog: pytest.LogCaptureFixture
) -> None:
    server.mode = "evil"
    exc = await post(server)
    assert isinstance(exc, PlatformRefused)
    text = str(exc)
    assert "\r" not in text and "\n" not in text and "\x1b" not in text and "\x07" not in text
    assert "\\x0d\\x0a2026-01-01 ERROR forged line\\x1b[2J" in text
    assert len(text) < 400 and text.endswith("…")


async def test_url_credentials_never_shown(server: RogueHttp) -> None:
    url = f"http://agent:s3cr3t@127.0.0.1:{server.port}/api"
    up = HttpUplink(spec(url), hebei.seal)
    assert up.target == f"http://***@127.0.0.1:{server.port}/api"
    server.mode = "evil"
    exc = await post(server, url=url)
    assert exc is not None and "s3cr3t" not in str(exc) and "agent:" not in str(exc)
    down = HttpUplink(spec("https://u:pw@127.0.0.1:1/x"), hebei.seal)
    await down.connect()
    with pytest.raises(UplinkError) as err:
        await down.publish("rtsData", b"{}")
    await down.close(clean=True)
    assert ":pw@" not in str(err.value) and "***@" in str(err.value)


def test_redaction_and_escaping_helpers() -> None:
    assert redact_url("https://a:b@h/x?q=c@d") == "https://***@h/x?q=c@d"
    assert redact_url("mqtts://h:8883") == "mqtts://h:8883"
    assert printable("a\r\nb\x1b\u2028c") == "a\\x0d\\x0ab\\x1b\\u2028c"
    assert printable("温度 ok") == "温度 ok"
    assert printable("x" * 500, 10) == "x" * 10 + "…"


def test_log_lines_of_a_refusal_stay_one_line(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("t").warning("uplink down: %s", printable("a\nFAKE"))
    assert "\n" not in caplog.records[0].getMessage()


def test_http_platform_url_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(platform_config(tmp_path, {"allow_http": False, "points": ["X"]}))
    msg = str(err.value)
    assert "platforms[0].url" in msg and "allow_http = true" in msg and "https://" in msg
    cfg = load_config(platform_config(tmp_path, {"points": ["X"]}))  # allow_http = true
    assert cfg.platforms[0].url.startswith("http://")


def test_config_errors_hide_url_credentials(tmp_path: Path) -> None:
    for url, allow in (("ftp://bob:hunter2@h/x", True), ("http://bob:hunter2@h/x", False)):
        with pytest.raises(ConfigError) as err:
            load_config(platform_config(tmp_path, {"url": url, "allow_http": allow}))
        assert "hunter2" not in str(err.value) and "***@h/x" in str(err.value)


def test_platform_ca_file_is_checked_and_https_only(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    https = {"url": "https://platform.example/api", "points": ["X"]}
    with pytest.raises(ConfigError) as err:
        load_config(platform_config(tmp_path, {**https, "ca_file": str(bad)}))
    assert "platforms[0].ca_file" in str(err.value) and "PEM" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(platform_config(tmp_path, {"ca_file": str(bad), "points": ["X"]}))
    assert "https:// URLs only" in str(err.value)


def test_platform_tls_floor_is_tls_1_2(tmp_path: Path) -> None:
    ctx = tls_context(spec("https://platform.example/api"))
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


# -- MQTT ----------------------------------------------------------------------------------


async def test_rogue_broker_flood_is_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rogue = RogueBroker(topic="evil/\x1b[2Jtopic", payload_size=8192)
    port = await rogue.start()
    up = MqttUplink(mqtt_spec(port), SITE)
    try:
        await up.connect()
        await until(lambda: up.unsolicited >= 2000, within=20.0)
        tracemalloc.start()
        base = up.unsolicited
        await until(lambda: up.unsolicited >= base + 5000, within=20.0)  # ~40 MB pushed
        traced, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await up.publish(f"{PREFIX}/x/telemetry", b"still publishing")  # PUBACKed
    finally:
        await up.close(clean=True)
        await rogue.stop()
    assert traced < 2 * 1024 * 1024, f"{traced} bytes kept while 40 MB were pushed"
    lines = [r.getMessage() for r in caplog.records if "subscribes to nothing" in r.getMessage()]
    assert len(lines) == 1 and "\\x1b[2Jtopic" in lines[0] and "\x1b" not in lines[0]


def test_mqtt_tls_floor_is_tls_1_2(tmp_path: Path) -> None:
    ctx = mqtt_tls_context(mqtt_spec(8883, tls=TlsSpec(None, None, None)))
    assert ctx is not None and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


# -- transport security in the config --------------------------------------------------------


def _secrets(tmp_path: Path) -> dict[str, str]:
    user, pw = tmp_path / "user", tmp_path / "pw"
    user.write_text("gw-1\n")
    pw.write_text("pa55\n")
    user.chmod(0o600)
    pw.chmod(0o600)
    return {"username_file": str(user), "password_file": str(pw)}


def test_password_over_plain_mqtt_refused_unless_allowed(tmp_path: Path) -> None:
    creds = _secrets(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(uplink_config(tmp_path, **creds, allow_plaintext_password=False))
    msg = str(err.value)
    assert "uplink.password_file" in msg and "allow_plaintext_password = true" in msg
    assert "tls = true" in msg
    load_config(uplink_config(tmp_path, **creds))  # allowed


def test_check_shows_mqtts_with_tls_and_hides_url_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = uplink_config(tmp_path, **_secrets(tmp_path), tls=True, port=8883)
    assert cli_main(["check", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "uplink mqtts://127.0.0.1:8883" in out
    cfg = uplink_config(tmp_path, **_secrets(tmp_path))
    assert cli_main(["check", "-c", str(cfg)]) == 0
    assert "uplink mqtt://127.0.0.1:1883 " in capsys.readouterr().out
    url = "http://bob:hunter2@127.0.0.1:8808/api"
    cfg = platform_config(tmp_path, {"url": url, "points": ["X"]})
    assert cli_main(["check", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "http://***@127.0.0.1:8808/api" in out
