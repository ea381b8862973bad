"""Test data builders shared by the test modules."""

from __future__ import annotations

from typing import Any

from agent.core.model import PointSpec


def point(index: int, **fields: Any) -> PointSpec:
    """A PointSpec with neutral defaults (a float32 input register per point); any field can
    be given to override them."""
    values: dict[str, Any] = {
        "index": index,
        "device": "DC-1",
        "key": f"p{index}",
        "code": f"P{index:03d}",
        "name_zh": "",
        "name_en": "",
        "bus": "b",
        "unit_id": 1,
        "table": "input",
        "address": 2 * index,
        "type": "float32",
        "order": "ABCD",
        "scale": 1.0,
        "offset": 0.0,
        "unit": "",
        "kind": "generic",
        "rule": None,
    }
    values.update(fields)
    return PointSpec(**values)
