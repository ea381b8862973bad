"""An MQTT-only agent imports no platform, web or HTTP code (issue 16: ~7 MB RSS for
cryptography alone). Checked in a fresh interpreter: the CLI's parser is built and the
supervisor's Agent constructed, as `dust-agent run` does, then sys.modules is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from firmware_sim.harness import LOOPBACK, dump_toml

NOT_FOR_MQTT_ONLY = (
    "cryptography",
    "httpx",
    "aiohttp",
    "http.server",
    "agent.uplink.platforms.crypto",
    "agent.uplink.platforms.http",
    "agent.uplink.platforms.records",
    "agent.uplink.platforms.receiver",
    "agent.config.platforms",
    "agent.service.web.server",
    "agent.service.web.source",
)

PROBE = """
import sys
from pathlib import Path
import orjson
from agent.cli.main import build_parser
from agent.config import load_config
from agent.service.supervisor import Agent

build_parser()
Agent(load_config(Path(sys.argv[1])))
print(orjson.dumps(sorted(sys.modules)).decode())
"""


def mqtt_only_config(tmp: Path) -> Path:
    data = {
        "site": {"enterprise_code": "E1", "gateway_id": "GW"},
        "buses": [{"name": "b", "host": LOOPBACK, "port": 1502, "poll_interval": 1.0}],
        "devices": [
            {
                "name": "D1",
                "bus": "b",
                "unit": 1,
                "points": [{"key": "r0", "table": "holding", "address": 0, "type": "uint16"}],
            }
        ],
        "uplink": {"host": LOOPBACK, "port": 1883},
        "storage": {"dir": str(tmp / "state")},
    }
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


def loaded_modules(cfg: Path) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(cfg)], capture_output=True, text=True, check=True
    )
    return set(orjson.loads(out.stdout))


def test_mqtt_only_agent_imports_no_platform_web_or_http_code(tmp_path: Path) -> None:
    modules = loaded_modules(mqtt_only_config(tmp_path))
    assert "aiomqtt" in modules  # the probe did build the agent
    found = sorted(m for m in NOT_FOR_MQTT_ONLY if m in modules)
    assert found == []
