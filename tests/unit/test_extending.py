"""The extension points of docs/extending.md, each exercised by a toy added through its
registry alone (no other module edited): a field-bus driver polled by a real BusPoller, a
platform profile validated by the config loader and sent to a real HTTP server, and a rule
kind evaluated by the RuleEngine."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from agent.config import ConfigError, load_config
from agent.config.schema import RawRule
from agent.core.model import Frame, PointSpec, ThresholdRule
from agent.core.platformspec import FieldMap, PlatformSpec
from agent.core.rulespec import PointRules
from agent.rules import RuleEngine
from agent.rules import registry as kinds
from agent.rules.base import Kind, Slot, matrix
from agent.rules.rows import BoolArray, Cols, FloatArray, Rows
from agent.source.plan import compile_config_plan, format_plan
from agent.source.poller import BusPoller
from agent.uplink.payload import encode_telemetry
from agent.uplink.platforms import registry as profiles
from agent.uplink.platforms.records import Translator
from drivers import registry as drivers
from drivers.base import (
    Block,
    BusAddress,
    BusConfigError,
    BusFields,
    BusSettings,
    DriverEntry,
    RawBlock,
    Source,
    SourceLinkError,
)
from firmware_sim.harness import dump_toml
from tests.factories import point
from tests.unit.test_config import BASE
from tests.unit.test_platforms import batch_of, secret

# -- a toy driver: an in-memory bus ----------------------------------------------------------

BANKS: dict[str, dict[tuple[int, str, int], int]] = {}  # bank name -> register values


class MemorySource:
    """A field bus whose registers live in BANKS[host]: a Source with no wire."""

    def __init__(self, bank: str) -> None:
        self.bank, self._open = bank, False

    async def connect(self) -> None:
        if self.bank not in BANKS:
            raise SourceLinkError(f"no memory bank {self.bank!r}")
        self._open = True

    async def read(self, block: Block) -> RawBlock:
        regs = BANKS[self.bank]
        span = range(block.address, block.address + block.count)
        values = [regs.get((block.unit_id, block.table, a), 0) for a in span]
        return RawBlock(block, np.array(values, dtype=np.uint16), time.time(), time.monotonic())

    async def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open


def _memory_address(fields: BusFields) -> BusAddress:
    if not fields.host:
        raise BusConfigError("host", "a memory bus needs host = the bank name")
    return BusAddress(host=fields.host)


def _memory(bus: BusSettings) -> Source:
    return MemorySource(bus.host)


MEMORY = DriverEntry(
    name="memory",
    make=_memory,
    address=_memory_address,
    request_s=lambda bus, block: 1e-6,
    endpoint=lambda bus: f"memory bank {bus.host}",
    basis=lambda bus: "1 µs per request assumed",
)


@pytest.fixture
def memory_driver() -> Iterator[DriverEntry]:
    drivers.register(MEMORY)
    yield MEMORY
    drivers.unregister(MEMORY.name)
    BANKS.clear()


def write_config(tmp_path: Path, **changes: Any) -> Path:
    data = copy.deepcopy(BASE)
    data.update(changes)
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(data))
    return f


async def test_a_registered_driver_is_configured_planned_and_polled(
    tmp_path: Path, memory_driver: DriverEntry
) -> None:
    bus = {"name": "plant", "type": "memory", "host": "bank-1"}
    cfg = load_config(write_config(tmp_path, buses=[bus]))
    (plan,) = compile_config_plan(cfg)
    assert "bus 'plant': memory bank bank-1" in format_plan([plan], cfg.points)
    x_a = next(p for p in cfg.points if (p.device, p.key) == ("X", "a"))
    BANKS["bank-1"] = {(3, "holding", 0): 42}

    frames: list[Frame] = []

    async def emit(frame: Frame) -> None:
        frames.append(frame)

    poller = BusPoller(plan, drivers.make_source(plan.bus), emit)
    frame = await poller.poll_once()
    await poller.source.close()
    assert frames == [frame] and not frame.quality.any()
    assert frame.value[list(frame.index).index(x_a.index)] == 42.0


def test_a_registered_driver_checks_its_bus_keys(
    tmp_path: Path, memory_driver: DriverEntry
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, buses=[{"name": "plant", "type": "memory"}]))
    assert "buses[0].host" in str(err.value) and "bank name" in str(err.value)


def test_an_unknown_bus_type_lists_the_registered_drivers(
    tmp_path: Path, memory_driver: DriverEntry
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, buses=[{"name": "plant", "type": "memroy"}]))
    assert "buses[0].type" in str(err.value)
    assert "did you mean 'memory'?" in str(err.value)
    assert "expected one of: tcp, rtu, rtu_tcp, memory" in str(err.value)


def test_a_driver_name_registers_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        drivers.register(drivers.driver("tcp"))


# -- a toy platform profile: plain JSON ------------------------------------------------------

PLAIN_RTS = FieldMap(endpoint="values", fields=(("code", "{point}"), ("v", "{value}")))
PLAIN_ALARMS = FieldMap(endpoint="alarms", fields=(("code", "{point}"), ("scd", "{scd}")))


def _plain_seal(spec: PlatformSpec, plaintext: bytes) -> tuple[bytes, dict[str, str]]:
    body = {"qybm": spec.enterprise_code, "data": plaintext.decode()}
    return orjson.dumps(body), {"x-gateway": spec.gateway_code}


def _plain_open(spec: PlatformSpec, body: dict[str, Any]) -> bytes:
    return str(body["data"]).encode()


def _plain_check(spec: PlatformSpec) -> str | None:
    return None if spec.period >= 10 else "plain_json takes at most one value each 10 s"


PLAIN = profiles.ProfileEntry(
    name="plain_json",
    seal=_plain_seal,
    open_body=_plain_open,
    key_bytes=8,
    fields=(PLAIN_RTS, PLAIN_ALARMS),
    hex_upper=False,
    check=_plain_check,
)


@pytest.fixture
def plain_profile() -> Iterator[profiles.ProfileEntry]:
    profiles.register(PLAIN)
    yield PLAIN
    profiles.unregister(PLAIN.name)


def platform_config(tmp_path: Path, **platform: Any) -> Path:
    data = copy.deepcopy(BASE)
    data["devices"][2]["points"][0]["code"] = "X-A"
    base = {
        "profile": "plain_json",
        "url": "http://127.0.0.1:1/api",
        "allow_http": True,
        "key_file": secret(tmp_path, "k", "12345678"),
        "points": ["X.a"],
    }
    data["platforms"] = [{**base, **platform}]
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(data))
    return f


def test_a_registered_profile_is_validated_by_the_config_loader(
    tmp_path: Path, plain_profile: profiles.ProfileEntry
) -> None:
    (spec,) = load_config(platform_config(tmp_path)).platforms
    assert spec.profile == "plain_json" and spec.telemetry == PLAIN_RTS
    assert spec.codes == {"X-A"} and spec.hex_upper is False
    with pytest.raises(ConfigError) as err:  # fixed fields: no installer mapping
        load_config(platform_config(tmp_path, telemetry={"endpoint": "x", "fields": {"a": "b"}}))
    assert "platforms[0].telemetry" in str(err.value) and "values, alarms" in str(err.value)
    with pytest.raises(ConfigError) as err:  # the profile's own check
        load_config(platform_config(tmp_path, period=5))
    assert "at most one value each 10 s" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(platform_config(tmp_path, profile="plain_jsno"))
    assert "platforms[0].profile" in str(err.value) and "'plain_json'?" in str(err.value)


@dataclass
class _Platform:
    """A real HTTP server on 127.0.0.1 that keeps each POST and answers {"code": 200}."""

    server: ThreadingHTTPServer
    posts: list[tuple[str, dict[str, Any], dict[str, str]]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"


@pytest.fixture
def http_platform() -> Iterator[_Platform]:
    posts: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, json.loads(body), dict(self.headers)))
            reply = b'{"code": 200}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="toy-platform", daemon=True)
    thread.start()
    yield _Platform(server, posts)
    server.shutdown()
    server.server_close()
    thread.join()


async def test_a_registered_profile_sends_through_its_uplink(
    tmp_path: Path, plain_profile: profiles.ProfileEntry, http_platform: _Platform
) -> None:
    cfg = load_config(platform_config(tmp_path, url=http_platform.url))
    (spec,) = cfg.platforms
    x_a = next(p for p in cfg.points if p.code == "X-A")
    frame = Frame(
        index=np.array([x_a.index], dtype=np.intp),
        ts=np.array([1714536000.0]),
        value=np.array([27.0]),
        quality=np.zeros(1, dtype=np.uint8),
    )
    (req,), _ = Translator(spec).requests(batch_of(encode_telemetry(frame, cfg.points)))
    uplink = profiles.make_uplink(spec)
    await uplink.connect()
    try:
        await uplink.publish(req.endpoint, req.body)
    finally:
        await uplink.close(clean=True)
    ((path, body, headers),) = http_platform.posts
    assert path == "/api/values" and headers["x-gateway"] == "G1" and body["qybm"] == "E1"
    assert json.loads(body["data"]) == [{"code": "X-A", "v": "27.00"}]


# -- a toy rule kind: above a limit, no delay ---------------------------------------------


@dataclass(frozen=True)
class AboveSpec:
    limit: float

    def __str__(self) -> str:
        return f"> {self.limit:g}"


def _above_spec(merged: Mapping[str, Any]) -> AboveSpec | None:
    v = merged.get("above_limit")
    if v is None:
        return None
    if v < 0:
        raise ValueError(f"above_limit must not be negative (got {v:g})")
    return AboveSpec(float(v))


class Above(Kind):
    """One alarm row per point: the reading above the point's limit, raised and cleared at
    once (no delay, no hysteresis)."""

    name = "above"
    slots = (Slot("above", "above", "high"),)
    row_level = (2,)
    row_slot = (0,)
    row_gated = (False,)

    def __init__(self, specs: list[PointSpec], values: FloatArray | None = None) -> None:
        super().__init__(specs, values)
        limits = [
            s.limit for p in specs if isinstance(s := p.rules.custom_spec("above"), AboveSpec)
        ]
        on = matrix([limits])
        zero = np.zeros(len(specs))
        self.rows = Rows(np.array([[1.0]]), on, on, zero, zero)

    def measure(
        self, cols: Cols, x: FloatArray, t: FloatArray, dead: BoolArray | None
    ) -> FloatArray:
        return x[None, :]


ABOVE = kinds.KindEntry(
    "above", Above, ("above_limit",), build=_above_spec, words={"above": ("超上限", "above")}
)


@pytest.fixture
def above_kind() -> Iterator[kinds.KindEntry]:
    kinds.register(ABOVE)
    yield ABOVE
    kinds.unregister(ABOVE.name)


def test_a_registered_rule_kind_is_evaluated_by_the_engine(above_kind: kinds.KindEntry) -> None:
    custom = kinds.build_custom({"above_limit": 5.0, "high_alarm": 70.0})
    assert custom == (("above", AboveSpec(5.0)),)
    pts = [
        point(0, rules=PointRules(custom=custom), name_en="level"),
        point(1, rule=ThresholdRule(high_alarm=70.0, on_delay=0.0)),  # a built-in kind beside
    ]
    engine = RuleEngine(pts)
    assert [k.name for k in engine.kinds] == ["threshold", "above"]

    def step(t: float, a: float, b: float) -> list[tuple[str, str, str]]:
        f = Frame(np.arange(2), np.full(2, t), np.array([a, b]), np.zeros(2, dtype=np.uint8))
        return [(e.alarm_id, e.transition, e.text_en) for e in engine.step(f)]

    assert step(0.0, 4.0, 20.0) == []
    ((aid, transition, text),) = step(1.0, 6.0, 20.0)
    assert (aid, transition) == ("P000:above", "raise") and "above" in text
    assert [a.alarm_id for a in engine.active()] == ["P000:above"]
    assert step(2.0, 4.0, 20.0)[0][:2] == ("P000:above", "clear")


def _picky(merged: Mapping[str, Any]) -> AboveSpec | None:
    """A builder over a key the schema has: chatter_count = 99 is refused."""
    if merged.get("chatter_count") == 99:
        raise ValueError("picky: chatter_count 99 is refused")
    return None


def test_a_registered_rule_kind_builder_error_is_a_config_error(
    tmp_path: Path, above_kind: kinds.KindEntry
) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        kinds.build_custom({"above_limit": -1.0})
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(ABOVE)
    picky = kinds.KindEntry("picky", Above, ("chatter_count",), build=_picky)
    with pytest.raises(ValueError, match="suffix 'above' is taken"):
        kinds.register(picky)
    kinds.register(dataclasses.replace(picky, evaluator=type("Picky", (Above,), {"slots": ()})))
    try:
        rules = {"kinds": {"hopper_temperature": {"chatter_count": 99}}}
        with pytest.raises(ConfigError) as err:
            load_config(write_config(tmp_path, rules=rules))
    finally:
        kinds.unregister("picky")
    assert "rules.kinds.hopper_temperature" in str(err.value)
    assert "picky: chatter_count 99 is refused" in str(err.value)


def test_every_registered_kind_reads_only_schema_keys() -> None:
    schema = {f.name for f in msgspec.structs.fields(RawRule)}
    for entry in kinds.kinds():
        assert set(entry.keys) <= schema, (entry.name, set(entry.keys) - schema)
