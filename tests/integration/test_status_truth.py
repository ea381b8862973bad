"""`dust-agent status` of the real agent tells the truth: a dead device's comm_loss alarm is
listed, a rate alarm shows degC/min against its threshold in degC/min (not the reading), an RTU
line shows its serial port; and the readings reach the broker without float noise.

Devices: pymodbus's own TCP server (unit 1 ramps a temperature, int16 x 0.1, at 0.2 degC a
second = 12 degC/min; unit 2 is not served: it never answers) and an RTU line on a pty pair
with nothing at the other end (unit 5 never answers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_sim.harness import Broker, free_port
from tests.e2e import Collector, start_agent, wait_for
from tests.integration.test_independent_devices import ThreadedServer
from tests.integration.test_operations import status, status_json
from tests.integration.test_rtu_e2e import records, write_config
from tests.pty import PtyPair

RATE_ID = "LIVE.temp:rate"


def ramp_device(unit: int) -> SimDevice:
    """Holding 0: 20.0 degC rising 0.2 degC a second (raw int16, x 0.1)."""
    t0 = time.monotonic()

    async def action(*args: object) -> None:
        fc, start, address, _count, current, _ = args
        assert isinstance(current, list) and isinstance(start, int)
        if fc == 3 and address == 0:
            current[0 - start] = 200 + int((time.monotonic() - t0) * 2)

    regs = [SimData(0, 1, [0] * 4, DataType.REGISTERS)]
    bits = [SimData(0, 1, [False] * 16, DataType.BITS)]
    return SimDevice(id=unit, action=action, simdata=(bits, bits, regs, regs))


def _config(tmp: Path, broker: Broker, port: int, serial: str) -> Path:
    quick = {"timeout": 0.3, "poll_interval": 0.25, "quarantine_after": 2}
    temp = {
        "key": "temp",
        "table": "holding",
        "address": 0,
        "type": "int16",
        "scale": 0.1,
        "unit": "°C",
        "rule": {"rate_alarm": 3.0, "rate_window": 2.0, "rate_hold": 0.0, "stale_polls": "off"},
    }
    return write_config(
        tmp,
        broker,
        [
            {"name": "lan", "host": "127.0.0.1", "port": port, **quick},
            {"name": "line", "type": "rtu", "port": serial, "baud": 19200, **quick},
        ],
        [
            {"name": "LIVE", "bus": "lan", "unit": 1, "points": [temp]},
            {"name": "DEAD", "bus": "lan", "unit": 2, "points": [{**temp, "rule": {}}]},
            {"name": "SERIAL", "bus": "line", "unit": 5, "points": [{**temp, "rule": {}}]},
        ],
    )


def _alarms(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["alarm_id"]: a for a in doc.get("alarms", [])}


def test_status_lists_comm_loss_rate_in_its_unit_and_the_serial_port(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    pty = PtyPair(tmp_path)
    pty.start()
    collector = Collector(broker.port)
    collector.start()
    cfg = _config(tmp_path, broker, port, pty.b)
    server = ThreadedServer(lambda: ModbusTcpServer([ramp_device(1)], address=("127.0.0.1", port)))
    with server:
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:
            last: list[dict[str, Any]] = [{}]

            def settled() -> bool:
                doc = last[0] = status_json(cfg)
                ids = set(_alarms(doc))
                return {RATE_ID, "DEAD:comm_loss", "SERIAL:comm_loss"} <= ids

            try:
                wait_for(settled, 60, "status: the rate alarm and both comm_loss alarms")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last status.json: {last[0]}") from None
            doc = last[0]
            table = status(cfg).stdout
        finally:
            code = agent.stop()
            collector.stop()
            pty.kill()
    assert code == 0, agent.text()[-3000:]

    alarms = _alarms(doc)
    assert len(doc["alarms"]) == 3, doc["alarms"]
    rate = alarms[RATE_ID]
    assert (rate["kind"], rate["unit"], rate["threshold"]) == ("rate", "°C/min", 3.0)
    # the measure is the slope (~12 degC/min), not the reading (~20-40 degC)
    assert 3.0 <= rate["value"] <= 20.0, rate
    assert rate["reading_unit"] == "°C" and rate["reading"] >= 20.0
    for dev in ("DEAD", "SERIAL"):
        lost = alarms[f"{dev}:comm_loss"]
        assert (lost["kind"], lost["level"]) == ("comm_loss", "alarm")
        assert lost["value"] >= 0.0 and lost["unit"] == "s without an answer"

    buses = {b["name"]: b for b in doc["buses"]}
    assert buses["line"]["target"] == pty.b
    assert buses["lan"]["target"] == f"127.0.0.1:{port}"
    states = {d["name"]: d["state"] for b in doc["buses"] for d in b["devices"]}
    assert states == {"LIVE": "ok", "DEAD": "quarantined", "SERIAL": "quarantined"}

    assert "active alarms: 3" in table, table
    assert "rate" in table and "(threshold 3 °C/min)" in table, table
    assert "DEAD:comm_loss" in table and "comm_loss: no answer for" in table, table
    assert pty.b in table and ":0 " not in table, table

    # on the wire: int16 x 0.1 readings are one-decimal numbers (no float noise)
    values = [r["value"] for r in records(collector, "LIVE", "temp") if r["value"] is not None]
    assert len(values) >= 5
    assert all(repr(v) == f"{v:.1f}" for v in values), values[:20]
    rate_at_broker = [a for a in collector.alarm_records() if a["alarm_id"] == RATE_ID]
    assert rate_at_broker and rate_at_broker[0]["unit"] == "°C/min"
    assert len(repr(rate_at_broker[0]["value"])) <= 8, rate_at_broker[0]
