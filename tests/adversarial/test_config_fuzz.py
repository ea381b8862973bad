"""A mutated-config fuzzer: every mutation of the shipped example config (and of a profile) is
accepted or refused with a key path or position, never a traceback (in-process, and a few
cases through the real `dust-agent check`)."""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import EX_CONFIG, ConfigError, load_config
from firmware_sim.harness import dump_toml
from tests.adversarial.conftest import EXAMPLE_TEXT, dust_agent
from tests.conftest import REPO

PROFILE = REPO / "config" / "profiles" / "dry_collector.toml"
Path_ = tuple[str | int, ...]

# Values an installer (or a bad editor) puts where another was meant.
ODD_NUMBERS = [0, -1, 1, 247, 248, 255, 256, 65535, 65536, 2**31, 2**63 - 1, -(2**63)]
ODD_FLOATS = [0.0, -0.0, -5.0, 1e-300, 1e308, math.inf, -math.inf, math.nan, 0.049]
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("“”：，＝【】\u3000é号"),
    max_size=12,
)
ANY_VALUE: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(ODD_FLOATS),
    st.booleans(),
    TEXT,
    st.lists(st.integers(-3, 300), max_size=3),
    st.builds(lambda: {"x": 1}),  # a new object per draw: mutations must not leak between
    st.builds(list),
)


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every key path of a parsed TOML document (tables, arrays and leaves)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _parent(doc: Any, path: Path_) -> Any:
    node = doc
    for k in path[:-1]:
        node = node[k]
    return node


def _leaf(doc: Any, path: Path_) -> Any:
    return _parent(doc, path)[path[-1]]


@st.composite
def mutated_doc(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with one to three structural mutations."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        old = parent[key]
        how = draw(st.sampled_from(["delete", "retype", "number", "text", "same"]))
        if how == "delete":
            del parent[key]
        elif how == "number":
            parent[key] = draw(st.sampled_from(ODD_NUMBERS + ODD_FLOATS))
        elif how == "text" and isinstance(old, str):
            parent[key] = draw(TEXT)
        elif how == "same" and isinstance(parent, list):
            parent.append(copy.deepcopy(old))  # a device, bus or point twice
        else:
            parent[key] = draw(ANY_VALUE)
    return doc


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> bytes:
    """`text` damaged as a file: truncated, random bytes, a duplicate table, a BOM, GBK."""
    data = text.encode()
    how = draw(st.sampled_from(["truncate", "bytes", "duplicate", "bom", "gbk", "unicode"]))
    at = draw(st.integers(0, len(data)))
    if how == "truncate":
        return data[:at]
    if how == "bytes":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "duplicate":
        return data + b"\n[uplink]\nport = 1884\n"
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "gbk":
        return text.encode("gb18030")
    pos = draw(st.integers(0, len(text)))
    return (text[:pos] + draw(TEXT) + text[pos:]).encode()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dust-agent-fuzz-"))
    (d / "profiles").mkdir()
    shutil.copy(PROFILE, d / "profiles" / PROFILE.name)
    yield d
    shutil.rmtree(d)


def _base(workdir: Path) -> dict[str, Any]:
    doc = tomllib.loads(EXAMPLE_TEXT)
    doc["storage"]["dir"] = str(workdir / "state")
    doc["profiles_dir"] = str(workdir / "profiles")
    doc["rules_pack"] = str(REPO / "config" / "rules" / "default.toml")
    return doc


def _outcome(file: Path) -> str:
    """'ok' or the ConfigError's text; any other exception fails the test (a traceback)."""
    try:
        load_config(file)
    except ConfigError as exc:
        assert exc.path, f"no key path or position: {exc}"
        assert exc.message, f"no message: {exc}"
        return str(exc)
    return "ok"


def _dump(doc: dict[str, Any]) -> str:
    try:
        return dump_toml(doc)
    except TypeError:  # a value TOML cannot hold: not a mutation of interest
        return dump_toml({})


EXAMPLES = int(os.environ.get("DUST_FUZZ_EXAMPLES", "150"))  # more for a long hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.data())
def test_mutated_config_is_accepted_or_refused_with_a_place(
    workdir: Path, data: st.DataObject
) -> None:
    doc = data.draw(mutated_doc(_base(workdir)))
    f = workdir / "agent.toml"
    f.write_text(_dump(doc), encoding="utf-8")
    _outcome(f)


@FUZZ
@given(data=st.data())
def test_damaged_config_file_is_refused_with_a_position(workdir: Path, data: st.DataObject) -> None:
    text = dump_toml(_base(workdir))
    f = workdir / "agent.toml"
    f.write_bytes(data.draw(mutated_text(text)))
    _outcome(f)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_profile_is_accepted_or_refused_with_a_place(
    workdir: Path, data: st.DataObject
) -> None:
    profile = tomllib.loads(PROFILE.read_text(encoding="utf-8"))
    doc = data.draw(mutated_doc(profile))
    pdir = workdir / "profiles"
    (pdir / PROFILE.name).write_text(_dump(doc), encoding="utf-8")
    f = workdir / "agent.toml"
    f.write_text(dump_toml(_base(workdir)), encoding="utf-8")
    try:
        _outcome(f)
    finally:
        shutil.copy(PROFILE, pdir / PROFILE.name)


def _set(path: Path_, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(doc: dict[str, Any]) -> None:
        _parent(doc, path)[path[-1]] = value

    return fn


def _delete(path: Path_) -> Callable[[dict[str, Any]], None]:
    def fn(doc: dict[str, Any]) -> None:
        del _parent(doc, path)[path[-1]]

    return fn


# A few through the real command: the process's exit code and stderr, not just the loader.
CLI_CASES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("unit as text", _set(("devices", 0, "unit"), "one")),
    ("port nan", _set(("buses", 0, "port"), math.nan)),
    ("no site", _delete(("site",))),
    ("storage is a number", _set(("storage",), 5)),
    ("on_delay inf", _set(("rules", "defaults", "on_delay"), math.inf)),
    ("max_mb nan", _set(("storage", "max_mb"), math.nan)),
]


@pytest.mark.parametrize(("case", "mutate"), CLI_CASES, ids=[c for c, _ in CLI_CASES])
def test_mutations_through_dust_agent_check(
    tmp_path: Path, case: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    shutil.copytree(PROFILE.parent, tmp_path / "profiles")
    doc = _base(tmp_path)
    mutate(doc)
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(doc), encoding="utf-8")
    r = dust_agent("check", "-c", str(f))
    assert r.returncode in (0, EX_CONFIG), (case, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == EX_CONFIG:
        assert f"config error: {f}: " in r.stderr


def test_damaged_file_through_dust_agent_check(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_bytes(b"\xef\xbb\xbf" + dump_toml(_base(tmp_path)).encode()[:300] + b"\xff\xfe")
    r = dust_agent("check", "-c", str(f))
    assert r.returncode == EX_CONFIG and "Traceback" not in r.stderr
    assert "line 1, column 1" in r.stderr
