"""The Hebei provincial interface V1.1: rtsData and eventsData, qybm/wgbm, DES envelope.

Request: POST {url}/rtsData or {url}/eventsData, Content-Type application/json, body
`{"qybm": <enterprise code>, "wgbm": <gateway code>, "data": HEX}` where HEX is the
upper-case hex of the Base64 of DES-CBC(PKCS#5 padding) of the inner JSON (agent.uplink.platforms.
crypto). The inner JSON is an object, as the document prints it (its reference receiver reads
`data.rts` and `data.events`):

    rtsData     {"qybm": enterprise code, "data": {"rts": [items]}}, an item
                {"tnm": point code, "ts": "YYYY-MM-DD HH:MM:SS", "val": "27.20"}
    eventsData  {"qybm": enterprise code, "data": {"events": [items]}}, an item
                {"ts", "oname": point code, "avx": value, "scd": status code (int),
                 "threshold": "80.00", "content": Chinese text (mandatory)}

Success: HTTP 200 and a JSON body whose "code" is 200.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from agent.core.platformspec import FieldMap, PlatformSpec
from agent.uplink.platforms.crypto import hebei_open, hebei_seal

RTS: Final = FieldMap(
    endpoint="rtsData",
    fields=(("tnm", "{point}"), ("ts", "{ts}"), ("val", "{value}")),
    list_key="data.rts",
    extra=(("qybm", "{enterprise}"),),
)
EVENTS: Final = FieldMap(
    endpoint="eventsData",
    list_key="data.events",
    extra=(("qybm", "{enterprise}"),),
    fields=(
        ("ts", "{ts}"),
        ("oname", "{point}"),
        ("avx", "{value}"),
        ("scd", "{scd}"),
        ("threshold", "{threshold}"),
        ("content", "{content}"),
    ),
)


def seal(spec: PlatformSpec, plaintext: bytes) -> tuple[bytes, dict[str, str]]:
    """The outer JSON body and headers for one request."""
    body = {
        "qybm": spec.enterprise_code,
        "wgbm": spec.gateway_code,
        "data": hebei_seal(spec.key, spec.iv, plaintext, upper=spec.hex_upper),
    }
    return orjson.dumps(body), {}


def open_body(spec: PlatformSpec, body: dict[str, Any]) -> bytes:
    """The inner JSON of an outer body (the reference receiver's side)."""
    return hebei_open(spec.key, spec.iv, str(body["data"]))
