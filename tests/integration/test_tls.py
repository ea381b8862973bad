"""MQTT over TLS with a test CA and a client certificate (real mosquitto); a wrong CA refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.core.model import SiteSpec, TlsSpec, UplinkSpec
from agent.uplink.mqtt import MqttUplink, UplinkError
from firmware_sim.harness import Broker, HarnessError, mosquitto_path

pytestmark = pytest.mark.integration
SITE = SiteSpec("E100", "gw-1")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    key, crt = f"{name}.key", f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", key, "-out", crt, cwd=d)  # fmt: skip


def issue(d: Path, ca: str, name: str, *, server: bool) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n" if server else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext.name,
            "-out", f"{name}.crt", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    issue(d, "ca", "server", server=True)
    issue(d, "ca", "client", server=False)
    for f in d.glob("*.key"):
        f.chmod(0o644)  # mosquitto may drop privileges before reading them
    return d


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Path) -> Iterator[Broker]:
    try:
        mosquitto_path()
    except HarnessError as exc:
        pytest.fail(str(exc))
    tls = {"cafile": pki / "ca.crt", "certfile": pki / "server.crt", "keyfile": pki / "server.key"}
    b = Broker(tmp_path / "tls-broker", tls=tls)
    b.start()
    try:
        yield b
    finally:
        b.stop(hard=True)


def spec(port: int, tls: TlsSpec) -> UplinkSpec:
    return UplinkSpec("127.0.0.1", port, "dust", "gw-1", publish_timeout=5.0, tls=tls)


async def test_tls_with_client_certificate_publishes(tls_broker: Broker, pki: Path) -> None:
    tls = TlsSpec(pki / "ca.crt", pki / "client.crt", pki / "client.key")
    up = MqttUplink(spec(tls_broker.port, tls), SITE)
    assert up.target.startswith("mqtts://")
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    await up.connect()
    try:
        async with aiomqtt.Client("127.0.0.1", tls_broker.port, tls_context=subscriber(pki)) as c:
            await c.subscribe("dust/E100/gw-1/telemetry", qos=1)
            await up.publish("dust/E100/gw-1/telemetry", b'{"tls": 1}')  # returns after PUBACK
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                await got.put((str(m.topic), m.payload))
                break
    finally:
        await up.close(clean=True)
    assert got.get_nowait() == ("dust/E100/gw-1/telemetry", b'{"tls": 1}')


def subscriber(pki: Path) -> ssl.SSLContext:
    """A TLS context of the test's own (not the agent's) for an independent subscriber."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    return ctx


async def test_wrong_ca_is_refused_with_a_clear_message(tls_broker: Broker, pki: Path) -> None:
    tls = TlsSpec(pki / "otherca.crt", pki / "client.crt", pki / "client.key")
    up = MqttUplink(spec(tls_broker.port, tls), SITE)
    with pytest.raises(UplinkError) as info:
        await up.connect()
    text = str(info.value)
    assert text.startswith(f"TLS: MQTT broker 127.0.0.1:{tls_broker.port} presented a certificate")
    assert str(pki / "otherca.crt") in text and "uplink.ca_file" in text
    await up.close(clean=False)


async def test_missing_client_certificate_is_explained(tls_broker: Broker, pki: Path) -> None:
    up = MqttUplink(spec(tls_broker.port, TlsSpec(pki / "ca.crt")), SITE)
    with pytest.raises(UplinkError) as info:
        await up.connect()
    text = str(info.value)
    assert text.startswith(f"cannot reach MQTT broker 127.0.0.1:{tls_broker.port}: "), text
    assert "no client certificate" in text and "uplink.cert_file/key_file" in text, text
    await up.close(clean=False)


def open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # e.g. the listing's own descriptor, gone by now
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


async def test_failed_handshakes_leave_no_socket_open(tls_broker: Broker, pki: Path) -> None:
    """paho does not close a socket whose TLS handshake failed; the uplink's SSLSocket does."""
    tls = TlsSpec(pki / "otherca.crt", pki / "client.crt", pki / "client.key")
    up = MqttUplink(spec(tls_broker.port, tls), SITE)
    before = open_sockets()
    for _ in range(20):
        with pytest.raises(UplinkError, match="presented a certificate"):
            await up.connect()
        await up.close(clean=False)
    # no gc.collect(): a leaked socket would still be open here, held by a traceback
    assert open_sockets() <= before + 1
