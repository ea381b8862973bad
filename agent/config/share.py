"""One object for equal values while a config loads.

Thousands of points usually share a handful of rule sets and names: each PointSpec refers to
one shared ThresholdRule, PointRules and name string instead of its own equal copy (~0.5 KB a
point at 5,000 points). Values are frozen, so sharing them cannot leak a change."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar, cast

T = TypeVar("T")


class Shared:
    """`share(value)`: the first value equal to `value` seen by this instance (or `value`)."""

    def __init__(self) -> None:
        self._seen: dict[object, object] = {}
        self._built: dict[tuple[int, Hashable], tuple[object, object]] = {}

    def built_from(self, source: object, build: Callable[[], T], *, extra: Hashable = ()) -> T:
        """`build()` once per `source` object (by identity, e.g. a kind's rule settings that
        many points use unchanged) and `extra` (by value); later calls return that value."""
        key = (id(source), extra)
        hit = self._built.get(key)
        if hit is not None and hit[0] is source:
            return cast(T, hit[1])
        value = build()
        self._built[key] = (source, value)  # holding `source` keeps its id from being reused
        return value

    def __call__(self, value: T) -> T:
        try:
            return cast(T, self._seen.setdefault(value, value))
        except TypeError:  # unhashable (a custom rule's list value): kept as it is
            return value
