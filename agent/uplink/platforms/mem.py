"""The ministry-style interface: {"appid": ..., "data": hex of SM4-CBC(JSON)}, appsecret header.

The ministry's field tables were not public when this was written, so the inner JSON is
built from a declarative mapping that the installer copies from the document the platform
issues ([platforms.telemetry] / [platforms.alarm] in the config; docs/platforms.md and
config/platforms/mem.example.toml show one). The envelope and the cipher are fixed:
SM4-CBC with PKCS#5 padding, lower-case hex (`hex_upper = true` for upper case), and the
header `appsecret: <secret>`. Success: HTTP 200 and a JSON body whose "code" is 200.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from agent.core.platformspec import FieldMap, PlatformSpec
from agent.uplink.platforms.crypto import sm4_open, sm4_seal

# What an installer starts from (and what the tests use): replace the names with the ones
# in the platform's document.
EXAMPLE_TELEMETRY: Final = FieldMap(
    endpoint="realtime",
    list_key="datas",
    extra=(("qybm", "{enterprise}"), ("wgbm", "{gateway}")),
    fields=(
        ("pointCode", "{point}"),
        ("value", "{value}"),
        ("unit", "{unit}"),
        ("collectTime", "{ts}"),
    ),
)
EXAMPLE_ALARM: Final = FieldMap(
    endpoint="alarm",
    list_key="datas",
    extra=(("qybm", "{enterprise}"), ("wgbm", "{gateway}")),
    fields=(
        ("pointCode", "{point}"),
        ("alarmTime", "{ts}"),
        ("value", "{value}"),
        ("threshold", "{threshold}"),
        ("status", "{scd}"),
        ("content", "{content}"),
    ),
)


def seal(spec: PlatformSpec, plaintext: bytes) -> tuple[bytes, dict[str, str]]:
    body = {
        "appid": spec.appid,
        "data": sm4_seal(spec.key, spec.iv, plaintext, upper=spec.hex_upper),
    }
    return orjson.dumps(body), {"appsecret": spec.appsecret}


def open_body(spec: PlatformSpec, body: dict[str, Any]) -> bytes:
    return sm4_open(spec.key, spec.iv, str(body["data"]))
