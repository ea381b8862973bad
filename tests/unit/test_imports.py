"""Dependencies point one way: the module graph of agent/, drivers/, firmware-sim/ and ingest/
(read with `ast`, every import: top level, inside functions, under TYPE_CHECKING) has no cycle
and no edge that the stage rules below forbid (core <- stages <- service/cli; ingest apart)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folder -> import package (firmware-sim/ is mapped to firmware_sim in pyproject.toml).
PACKAGES = {
    "agent": "agent",
    "drivers": "drivers",
    "firmware-sim": "firmware_sim",
    "ingest": "ingest",
}
PROJECT = frozenset(PACKAGES.values())
IO_LIBRARIES = ("asyncio", "sqlite3", "socket", "httpx", "aiomqtt", "pymodbus", "serial")
# Everything but the wiring (agent.service, agent.cli) and the simulator.
STAGES: tuple[str, ...] = ("agent.core", "agent.config", "agent.source", "agent.rules")
STAGES += ("agent.store", "agent.uplink", "drivers")

# (importer prefix, forbidden imported prefixes, why). A prefix matches the module itself and
# everything below it ("agent.store" matches "agent.store.sqlite", not "agent.storefront").
# Imports inside the importer's own prefix are always allowed (agent.core.model may import
# agent.core.rulespec).
RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "ingest",
        ("agent", "drivers", "firmware_sim"),
        "the central ingest is the platform's side: it reads the documented wire format only",
    ),
    (
        "agent.core",
        ("agent", "drivers", "firmware_sim"),
        "core types import nothing of the project",
    ),
    ("agent.rules", IO_LIBRARIES, "rules are pure: no I/O"),
    (
        "agent.rules",
        ("agent.store", "agent.uplink", "agent.source", "agent.service", "agent.cli"),
        "rules know frames and core types only",
    ),
    (
        "drivers",
        ("agent.uplink", "agent.store", "agent.service", "agent.rules", "agent.source"),
        "drivers know the core types only",
    ),
    (
        "agent.store",
        ("agent.uplink", "agent.service", "agent.source", "agent.rules", "agent.cli"),
        "the store never imports its consumers",
    ),
    (
        "agent.source",
        ("agent.rules", "agent.store", "agent.uplink", "agent.service"),
        "the source stage knows core types and drivers only",
    ),
    (
        "agent.uplink",
        ("agent.source", "agent.rules", "agent.service", "agent.cli"),
        "uplinks know the store's contract and core types only",
    ),
    *(
        (stage, ("agent.service", "agent.cli"), "only service and cli wire stages")
        for stage in STAGES
    ),
)

# Known violations, each to be fixed. Remove an entry when it is fixed: the test then fails if
# the edge is still there. (Empty: the last one, store.guard -> uplink.payload, is gone.)
ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    line: int


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> Iterator[Path]:
    for folder in PACKAGES:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, is_package: bool, tree: ast.AST, known: Iterable[str]) -> list[Edge]:
    """Every import in `tree`, wherever it is. `from a import b` is an edge to module a.b when
    that is a module of the project, else to a."""
    modules = set(known)
    out: list[Edge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(Edge(module, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_package, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append(Edge(module, sub if sub in modules else target, node.lineno))
    return out


def project_graph() -> dict[str, list[Edge]]:
    files = {module_name(f): f for f in project_files()}
    graph: dict[str, list[Edge]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = imports_of(name, path.name == "__init__.py", tree, files)
    return graph


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def forbidden(
    graph: Mapping[str, list[Edge]],
    rules: Iterable[tuple[str, tuple[str, ...], str]] = RULES,
    allowed: frozenset[tuple[str, str]] = ALLOWED,
) -> list[str]:
    """One line per edge that a rule forbids and the allow-list does not excuse."""
    rules = tuple(rules)
    out: set[str] = set()
    for edges in graph.values():
        for e in edges:
            if (e.src, e.dst) in allowed:
                continue
            for importer, banned, why in rules:
                if not under(e.src, importer) or under(e.dst, importer):
                    continue  # a stage may import its own modules
                if any(under(e.dst, b) for b in banned):
                    out.add(f"{e.src} (line {e.line}) imports {e.dst}: {why}")
    return sorted(out)


def cycles(graph: Mapping[str, list[Edge]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing
    itself), each as one cycle through it, found with Tarjan's algorithm."""
    succ = {m: sorted({e.dst for e in es if e.dst in graph}) for m, es in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in succ[v]:
                found.append(_cycle_in(sorted(comp), succ))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def _cycle_in(comp: list[str], succ: Mapping[str, list[str]]) -> list[str]:
    """A concrete cycle through comp[0] inside the component (breadth-first, shortest)."""
    start, members = comp[0], set(comp)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in succ[v]:
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return comp  # unreachable for a real component


def test_the_project_has_no_import_cycle() -> None:
    found = cycles(project_graph())
    assert not found, "import cycles (one per tangle of modules):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def test_no_stage_imports_what_it_must_not() -> None:
    bad = forbidden(project_graph())
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_every_allowed_edge_still_exists() -> None:
    """An allow-list entry whose edge is gone must be deleted, so it cannot hide a new one."""
    edges = {(e.src, e.dst) for es in project_graph().values() for e in es}
    assert edges >= ALLOWED, f"stale allow-list entries: {sorted(ALLOWED - edges)}"


def test_the_walker_sees_every_kind_of_import() -> None:
    source = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING
from . import sibling
from ..up import thing
if TYPE_CHECKING:
    from agent.store.outbox import Outbox
def f() -> None:
    import agent.service.ops
"""
    known = {"agent.x.sibling", "agent.up", "agent.store.outbox", "agent.service.ops"}
    edges = imports_of("agent.x.mod", False, ast.parse(source), known)
    dsts = {e.dst for e in edges}
    assert {"os", "agent.x.sibling", "agent.up", "agent.store.outbox", "agent.service.ops"} <= dsts


def _graph(edges: Mapping[str, Iterable[str]]) -> dict[str, list[Edge]]:
    return {m: [Edge(m, d, 1) for d in ds] for m, ds in edges.items()}


def test_the_checker_reports_a_cycle() -> None:
    graph = _graph(
        {
            "agent.service.supervisor": ["agent.service.ops"],
            "agent.service.ops": ["agent.service.reload"],
            "agent.service.reload": ["agent.service.supervisor", "agent.core.model"],
            "agent.core.model": [],
        }
    )
    assert cycles(graph) == [
        [
            "agent.service.ops",
            "agent.service.reload",
            "agent.service.supervisor",
            "agent.service.ops",
        ]
    ]
    assert cycles(_graph({"a": ["b"], "b": []})) == []


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("agent.core.model", "agent.rules.engine"),
        ("agent.rules.engine", "sqlite3"),
        ("agent.rules.engine", "asyncio"),
        ("agent.store.sqlite", "agent.uplink.mqtt"),
        ("drivers.modbus_tcp", "agent.source.plan"),
        ("agent.source.plan", "agent.store.outbox"),
        ("agent.uplink.mqtt", "agent.service.supervisor"),
        ("agent.config.load", "agent.cli.main"),
    ],
)
def test_the_checker_reports_a_forbidden_edge(src: str, dst: str) -> None:
    bad = forbidden(_graph({src: [dst]}))
    assert len(bad) >= 1
    assert bad[0].startswith(f"{src} (line 1) imports {dst}")


def test_the_checker_allows_the_one_way_edges() -> None:
    graph = _graph(
        {
            "agent.service.supervisor": ["agent.store.outbox", "agent.uplink.mqtt", "asyncio"],
            "agent.source.poller": ["drivers.base", "agent.core.model", "asyncio"],
            "agent.rules.engine": ["numpy", "agent.core.model"],
            "agent.uplink.mqtt": ["agent.store.outbox", "aiomqtt"],
        }
    )
    assert forbidden(graph) == []
    # an allow-list excuses exactly its own edge
    excused = frozenset({("agent.store.guard", "agent.uplink.payload")})
    assert forbidden(_graph({"agent.store.guard": ["agent.uplink.payload"]}), allowed=excused) == []
    assert forbidden(_graph({"agent.store.guard": ["agent.uplink.payload"]}), allowed=frozenset())
