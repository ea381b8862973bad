"""Hypothesis fuzzer of operator request bodies against the running agent's socket handler:
every body gets one JSON answer (ok true or false with a reason), and the agent keeps
polling and publishing throughout."""

from __future__ import annotations

import json
import socket
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim.harness import Broker
from tests.adversarial.plant import ALARM, plant, read_line

pytestmark = pytest.mark.integration

KEYS = st.sampled_from(["action", "alarm_id", "by", "note", "for", "ts", "until", "x", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(),
    st.text(max_size=80),
    st.sampled_from(["ack", "shelve", "unshelve", ALARM, "nan", "inf", "-inf", "1e999"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=6)


def _encode(body: Any) -> bytes:
    # the standard library writes what orjson refuses: 2**64, NaN, Infinity
    return body if isinstance(body, bytes) else json.dumps(body).encode()


BODIES = st.one_of(
    st.binary(max_size=300),
    OBJECTS.map(_encode),
    st.lists(SCALARS, max_size=4).map(_encode),
    st.text(max_size=200).map(str.encode),
)


def test_fuzzed_request_bodies_always_get_an_answer(broker: Broker) -> None:
    with plant(broker) as p:

        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(body=BODIES, newline=st.booleans())
        def one(body: bytes, newline: bool) -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(20)
                s.connect(str(p.socket))
                s.sendall(body.replace(b"\n", b" ") + (b"\n" if newline else b""))
                if not newline:
                    s.shutdown(socket.SHUT_WR)
                answer = orjson.loads(read_line(s))
            assert isinstance(answer, dict) and isinstance(answer["ok"], bool), answer
            assert answer["ok"] or (isinstance(answer["error"], str) and answer["error"])

        one()
        assert "Traceback" not in p.agent.text()
        p.still_publishing()
