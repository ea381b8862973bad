"""The rule-kind registry: each kind registers its name, the config keys it reads, how those
keys become a per-point spec, and its vectorized evaluator (a `Kind` subclass).

Contract: `register(entry)` adds a kind; the RuleEngine evaluates the registered kinds in
registration order (built-ins first, agent.rules.builtin), each over the points it `uses`.
A built-in kind reads its settings from the core PointRules fields (parsed by agent.config);
a kind added later passes `build`: the config loader calls it with a point's merged rule keys
and keeps the result in `PointRules.custom` under the kind's name (ValueError = a config
error, its message shown with the file and key path). docs/extending.md walks through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.model import PointSpec
from agent.rules.base import Kind

# merged rule keys of one point -> its spec for the kind (None: the point does not use it)
SpecBuilder = Callable[[Mapping[str, Any]], object | None]


@dataclass(frozen=True, slots=True)
class KindEntry:
    """One rule kind. `evaluator(specs, values)` builds the kind over the points it uses.

    `uses(point)` says whether a point uses the kind; when `build` is given and `uses` is
    not, a point uses it when its built spec is not None. `keys` are the [rules] keys the
    kind reads (each must be a field of agent.config.schema.RawRule). `words` gives the
    (Chinese, English) name of each alarm kind on the wire the evaluator's slots use.
    """

    name: str
    evaluator: type[Kind]
    keys: tuple[str, ...] = ()
    uses: Callable[[PointSpec], bool] | None = None
    build: SpecBuilder | None = None
    words: Mapping[str, tuple[str, str]] | None = None

    def used_by(self, point: PointSpec) -> bool:
        if self.uses is not None:
            return self.uses(point)
        return point.rules.custom_spec(self.name) is not None


_KINDS: dict[str, KindEntry] = {}


def register(entry: KindEntry) -> KindEntry:
    """Add a rule kind; its name and its slots' alarm-id suffixes must be new."""
    if entry.name in _KINDS:
        raise ValueError(f"rule kind {entry.name!r} is already registered")
    if entry.uses is None and entry.build is None:
        raise ValueError(f"rule kind {entry.name!r} needs `uses` or `build`")
    taken = {s.suffix for e in _KINDS.values() for s in e.evaluator.slots}
    clash = sorted(taken & {s.suffix for s in entry.evaluator.slots})
    if clash:
        raise ValueError(f"rule kind {entry.name!r}: alarm-id suffix {clash[0]!r} is taken")
    _KINDS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a kind (tests; engines built before keep it)."""
    del _KINDS[name]


def kinds() -> Iterator[KindEntry]:
    """The registered kinds in registration order."""
    yield from list(_KINDS.values())


def kind_words() -> dict[str, tuple[str, str]]:
    """(Chinese, English) names of the registered kinds' alarm kinds."""
    return {k: w for e in _KINDS.values() for k, w in (e.words or {}).items()}


def build_custom(merged: Mapping[str, Any]) -> tuple[tuple[str, object], ...]:
    """The specs of every kind with a builder that this point's merged rule keys enable.
    Raises ValueError (with the kind's message) on a bad value."""
    out: list[tuple[str, object]] = []
    for e in list(_KINDS.values()):
        if e.build is None:
            continue
        spec = e.build(merged)
        if spec is not None:
            out.append((e.name, spec))
    return tuple(out)
