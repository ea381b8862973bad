"""Addresses as manuals print them (addressing = modicon / one_based) against pymodbus's own TCP
server, whose registers are written here with plain lists and `struct`: every register holds a
different value, so a neighbour's value can never pass for the right one."""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.config import ConfigError, load_config
from firmware_sim.harness import dump_toml
from tests.e2e import BIN
from tests.integration.test_independent_devices import poll_cycles

UNITS = (1, 2, 3, 4)
F32 = struct.unpack(">HH", struct.pack(">f", 63.153))  # holding 10..11


def _device(unit: int) -> SimDevice:
    holding = [1000 + i for i in range(20)]
    holding[10:12] = F32
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, 1, [i % 3 == 0 for i in range(16)], DataType.BITS)],  # coils
            [SimData(0, 1, [i % 2 == 1 for i in range(16)], DataType.BITS)],  # discrete
            [SimData(0, 1, holding, DataType.REGISTERS)],
            [SimData(0, 1, [2000 + i for i in range(20)], DataType.REGISTERS)],
        ),
    )


# (key, table, type, address as zero_based, modicon, one_based)
POINTS = [
    ("h0", "holding", "uint16", 0, 40001, 1),
    ("h5", "holding", "uint16", 5, 400006, 6),  # the 6-digit Modicon form
    ("f10", "holding", "float32", 10, 40011, 11),
    ("i0", "input", "uint16", 0, 30001, 1),
    ("i7", "input", "uint16", 7, 30008, 8),
    ("c0", "coil", "uint16", 0, 1, 1),
    ("c2", "coil", "uint16", 2, 3, 3),
    ("c3", "coil", "uint16", 3, 4, 4),
    ("d1", "discrete", "uint16", 1, 10002, 2),
    ("d2", "discrete", "uint16", 2, 10003, 3),
]
# by hand: holding i = 1000 + i, float32 63.153 at 10, input i = 2000 + i, coil i = (i % 3 == 0),
# discrete i = (i odd)
WANT = [1000.0, 1005.0, 63.153, 2000.0, 2007.0, 1.0, 0.0, 1.0, 1.0, 0.0]


@pytest.fixture
async def server() -> AsyncIterator[int]:
    srv = ModbusTcpServer([_device(u) for u in UNITS], address=("127.0.0.1", 0))
    await srv.serve_forever(background=True)
    listener = srv.transport
    assert isinstance(listener, asyncio.Server)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        await srv.shutdown()  # type: ignore[no-untyped-call]


def _points(column: int) -> list[dict[str, object]]:
    return [
        {"key": row[0], "table": row[1], "type": row[2], "address": row[column]} for row in POINTS
    ]


def _config(tmp: Path, port: int) -> Path:
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / "manual.toml").write_text(
        dump_toml({"name": "manual", "addressing": "modicon", "points": _points(4)})
    )
    data = {
        "site": {"enterprise_code": "E1", "gateway_id": "GW"},
        "buses": [{"name": "lan", "host": "127.0.0.1", "port": port, "timeout": 0.5}],
        "devices": [
            {"name": "ZERO", "bus": "lan", "unit": 1, "points": _points(3)},
            {"name": "MODICON", "bus": "lan", "unit": 2, "addressing": "modicon",
             "points": _points(4)},
            {"name": "ONE", "bus": "lan", "unit": 3, "addressing": "one_based",
             "points": _points(5)},
            {"name": "PROFILE", "bus": "lan", "unit": 4, "profile": "manual"},
        ],
        "storage": {"dir": str(tmp / "state")},
        "profiles_dir": str(profiles),
    }  # fmt: skip
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


async def test_modicon_and_one_based_read_the_right_registers(tmp_path: Path, server: int) -> None:
    cfg = load_config(_config(tmp_path, server))
    assert cfg.warnings == ()
    by_dev = {d: [p for p in cfg.points if p.device == d] for d in ("ZERO", "MODICON", "ONE")}
    for dev in ("MODICON", "ONE", "PROFILE"):
        pts = [p for p in cfg.points if p.device == dev]
        assert [(p.table, p.address) for p in pts] == [(p.table, p.address) for p in by_dev["ZERO"]]
    assert [p.written_address for p in by_dev["MODICON"]][:2] == [
        "40001 (modicon)",
        "400006 (modicon)",
    ]
    frames, _ = await poll_cycles(cfg.buses[0], list(cfg.points), 2)
    for f in frames:
        assert not f.quality.any()
        got = f.value.reshape(len(UNITS), len(POINTS))
        for row in got:
            np.testing.assert_allclose(row, WANT, rtol=1e-7)


def _one_device(tmp: Path, device: dict[str, object]) -> Path:
    data = {
        "site": {"enterprise_code": "E1", "gateway_id": "GW"},
        "buses": [{"name": "lan", "host": "127.0.0.1", "port": 502}],
        "devices": [{"name": "D", "bus": "lan", "unit": 1, **device}],
        "storage": {"dir": str(tmp / "state")},
    }
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


def test_modicon_looking_zero_based_address_is_a_check_warning(tmp_path: Path) -> None:
    pts = [{"key": "t", "table": "holding", "address": 40001}]
    cfg = _one_device(tmp_path, {"points": pts})
    out = subprocess.run(
        [str(BIN / "dust-agent"), "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "WARNING: " in out.stdout
    assert "addresses as written" not in out.stdout
    assert "devices[0].points[0].address: holding address 40001 looks like Modicon" in out.stdout
    assert 'addressing = "modicon"' in out.stdout
    # written out, zero_based is taken as meant: no warning
    cfg = _one_device(tmp_path, {"points": pts, "addressing": "zero_based"})
    assert load_config(cfg).warnings == ()
    # written in Modicon notation: check prints the address as written and as read
    cfg = _one_device(tmp_path, {"points": pts, "addressing": "modicon"})
    out = subprocess.run(
        [str(BIN / "dust-agent"), "check", "-c", str(cfg)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "WARNING" not in out.stdout
    assert "D.t  40001 (modicon) -> holding 0" in out.stdout, out.stdout
    # a 6-digit form with the default addressing is an error that names the way out
    pts6 = [{"key": "t", "table": "holding", "address": 400001}]
    with pytest.raises(
        ConfigError, match=r"looks like Modicon notation .holding 0.: set addressing"
    ):
        load_config(_one_device(tmp_path, {"points": pts6}))


@pytest.mark.parametrize(
    ("addressing", "table", "address", "message"),
    [
        (
            "modicon",
            "holding",
            30001,
            r"not a Modicon holding address .*30001 is in the input table",
        ),
        ("modicon", "input", 40001, "not a Modicon input address"),
        ("modicon", "holding", 40000, r"not a Modicon holding address .40001..49999"),
        ("one_based", "holding", 0, "one_based addresses run 1..65536"),
    ],
)
def test_addresses_that_do_not_fit_their_notation_are_errors(
    tmp_path: Path, addressing: str, table: str, address: int, message: str
) -> None:
    pts = [{"key": "t", "table": table, "address": address}]
    path = _one_device(tmp_path, {"points": pts, "addressing": addressing})
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "devices[0].points[0].address" in str(err.value)


def test_holes_in_the_devices_notation(tmp_path: Path) -> None:
    pts = [{"key": "a", "table": "holding", "address": 40001},
           {"key": "b", "table": "holding", "address": 40004}]  # fmt: skip
    cfg = load_config(
        _one_device(tmp_path, {"points": pts, "addressing": "modicon", "holes": [40002]})
    )
    assert [p.address for p in cfg.points] == [0, 3]
    assert cfg.points[0].holes == (1,)
