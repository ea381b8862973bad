"""hypothesis fuzzers over the wire: RTU and Modbus TCP replies into the real drivers over
real loopback sockets (and the RTU frame search), platform HTTP replies into the real HTTP
uplink against a real local server, and payloads into the reference consumer. Never a crash,
never a traceback: a reading, or a counted fault (a SourceError, an UplinkError, a refusal)."""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.uplink.consumer import Tracker
from agent.uplink.contract import UplinkError
from agent.uplink.platforms import hebei
from agent.uplink.platforms.http import HttpUplink
from drivers.base import Block, RawBlock, SourceError
from drivers.line import TcpLine
from drivers.modbus_rtu import ModbusRtuSource
from drivers.rtu_frame import find_reply, with_crc
from tests.adversarial.rogue import RogueHttp
from tests.adversarial.test_field import FakeTcpDevice, end_handlers, mbap, track
from tests.adversarial.test_network import spec as platform_spec

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BLOCK = Block(unit_id=1, table="holding", address=0, count=3)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage()[:200] for r in noisy]


def reading_or_fault(got: object) -> None:
    if isinstance(got, RawBlock):
        assert len(got.registers) == BLOCK.count
    else:
        assert isinstance(got, SourceError), repr(got)


# -- RTU ---------------------------------------------------------------------------------------

valid_rtu = st.lists(st.integers(0, 0xFFFF), min_size=3, max_size=3).map(
    lambda regs: with_crc(bytes([1, 3, 6]) + b"".join(r.to_bytes(2, "big") for r in regs))
)
rtu_reply = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.binary(max_size=40), valid_rtu, st.binary(max_size=40)).map(b"".join),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=20)).map(
        lambda t: with_crc(bytes([1, t[0], t[1]]) + t[2])
    ),
)


@given(rtu_reply, st.integers(1, 247), st.sampled_from([1, 2, 3, 4]), st.integers(1, 125))
def test_rtu_frame_search_never_raises(buf: bytes, unit: int, fc: int, count: int) -> None:
    reply = find_reply(buf, unit, fc, count)
    if reply is not None:
        assert reply.skipped >= 0 and reply.end <= len(buf)


async def _rtu_read(reply: bytes) -> object:
    handlers: set[asyncio.Task[Any]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        track(handlers)
        try:
            await r.readexactly(8)
            w.write(reply)
            await w.drain()
            await r.read()  # until the driver hangs up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    line = TcpLine("127.0.0.1", port, connect_timeout=1.0, name="fuzz")
    src = ModbusRtuSource(line, timeout=0.15, retries=0, timing=None, late_guard=0.02)
    try:
        await src.connect()
        return await src.read(BLOCK)
    except SourceError as exc:
        return exc
    finally:
        await src.close()
        server.close()
        await end_handlers(handlers)


@FUZZ
@given(rtu_reply)
def test_rtu_driver_over_tcp_takes_any_reply(
    caplog: pytest.LogCaptureFixture, reply: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    got = asyncio.run(_rtu_read(reply))
    reading_or_fault(got)
    if isinstance(got, RawBlock):
        assert reply.find(bytes([1, 3, 6])) >= 0
    no_tracebacks(caplog)


# -- Modbus TCP --------------------------------------------------------------------------------

pdu = st.one_of(
    st.binary(max_size=30),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=12)).map(
        lambda t: bytes([t[0], t[1]]) + t[2]
    ),
    st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=5).map(
        lambda regs: bytes([3, 2 * len(regs)]) + b"".join(r.to_bytes(2, "big") for r in regs)
    ),
)
tcp_reply = st.one_of(
    pdu.map(lambda p: ("pdu", p)),
    st.binary(max_size=80).map(lambda b: ("raw", b)),
    st.tuples(st.integers(0, 0xFFFF), pdu).map(lambda t: ("len", t[0].to_bytes(2, "big") + t[1])),
)


async def _tcp_read(kind: str, data: bytes) -> object:
    from drivers.modbus_tcp import ModbusTcpSource

    def answer(head: bytes, unit: int, _: bytes) -> bytes:
        if kind == "pdu":
            return mbap(head, unit, data)
        if kind == "len":  # a length field that may lie
            return head[:4] + data[:2] + bytes([unit]) + data[2:]
        return data

    async with FakeTcpDevice(answer) as dev:
        src = ModbusTcpSource("127.0.0.1", dev.port, 0.15, 0, "fuzz")
        try:
            await src.connect()
            return await src.read(BLOCK)
        except SourceError as exc:
            return exc
        finally:
            await src.close()


@FUZZ
@given(tcp_reply)
def test_modbus_tcp_driver_takes_any_reply(
    caplog: pytest.LogCaptureFixture, reply: tuple[str, bytes]
) -> None:
    caplog.set_level(logging.DEBUG)
    got = asyncio.run(_tcp_read(*reply))
    reading_or_fault(got)
    no_tracebacks(caplog)


# -- platform HTTP replies ---------------------------------------------------------------------

header = st.one_of(
    st.sampled_from(
        [
            b"Content-Encoding: gzip",
            b"Content-Encoding: deflate",
            b"Content-Encoding: br",
            b"Content-Encoding: gzip, gzip",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 0",
            b"Content-Length: 99999999999",
            b"Content-Length: -1",
            b"Connection: close",
            b"Content-Type: application/json",
        ]
    ),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
body = st.one_of(
    st.binary(max_size=400),
    st.sampled_from([b'{"code": 200}', b'{"code": "200", "msg": "\x1b[31m"}', b'{"code": 500}']),
    st.binary(max_size=200).map(zlib.compress),
)


def _http_reply(status: int, headers: list[bytes], content: bytes, length: bool) -> bytes:
    lines = [b"HTTP/1.1 %d X" % status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(content))
    return b"\r\n".join(lines) + b"\r\n\r\n" + content


async def _post(raw: bytes) -> UplinkError | None:
    srv = RogueHttp("raw")
    srv.raw = raw
    await srv.start()
    up = HttpUplink(platform_spec(srv.url, timeout=0.5), hebei.seal)
    try:
        await up.connect()
        await up.publish("rtsData", b'{"data": []}')
    except UplinkError as exc:
        return exc
    finally:
        await up.close(clean=True)
        await srv.stop()
    return None


@FUZZ
@given(
    st.integers(200, 599),
    st.lists(header, max_size=4),
    body,
    st.booleans(),
)
def test_platform_uplink_takes_any_reply(
    caplog: pytest.LogCaptureFixture,
    status: int,
    headers: list[bytes],
    content: bytes,
    length: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    got = asyncio.run(_post(_http_reply(status, headers, content, length)))
    if got is not None:
        text = str(got)
        assert "\r" not in text and "\n" not in text and "\x1b" not in text
    no_tracebacks(caplog)


# -- the reference consumer --------------------------------------------------------------------

json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
envelope = st.fixed_dictionaries(
    {
        "enterprise": st.sampled_from(["E", 1, ""]),
        "gateway": st.just("G"),
        "stream": st.sampled_from(["telemetry", "alarm", "event", "x"]),
        "records": st.one_of(
            json_value,
            st.lists(
                st.fixed_dictionaries(
                    {"seq": json_value | st.integers(1, 50)},
                    optional={
                        "kind": st.sampled_from(["data_dropped", "outbox_replaced"]),
                        "data": json_value
                        | st.fixed_dictionaries(
                            {},
                            optional={
                                "seq_first": json_value | st.integers(1, 60),
                                "seq_last": json_value | st.integers(1, 60),
                                "stream": json_value,
                                "next_seq": json_value,
                            },
                        ),
                    },
                ),
                max_size=5,
            ),
            st.dictionaries(st.sampled_from(["seq", "v"]), st.lists(json_value, max_size=3)),
        ),
    }
)


def _dumps(doc: Any) -> bytes:
    import orjson

    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits: send its text instead
        return repr(doc).encode()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(envelope.map(_dumps), json_value.map(_dumps), st.binary()), max_size=6))
def test_consumer_takes_any_message(payloads: list[bytes]) -> None:
    t = Tracker()
    refused = 0
    for payload in payloads:
        before = sum(t.faults.values())
        new = t.accept(payload)
        refused += sum(t.faults.values()) - before
        assert isinstance(new, list)
    t.report()
    t.gaps()
    assert refused <= len(payloads)
