"""The distribution ships every package: a subpackage left out of pyproject breaks installs."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_package_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {v: k for k, v in cfg.get("package-dir", {}).items()}  # dir -> package name
    found: set[str] = set()
    for top in ("agent", "drivers", "firmware-sim", "ingest"):
        for init in (REPO / top).rglob("__init__.py"):
            parts = list(init.parent.relative_to(REPO).parts)
            parts[0] = mapped.get(parts[0], parts[0])
            found.add(".".join(parts))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {found - listed}"
    assert listed - found == set(), f"listed but not on disk: {listed - found}"
