"""The unit file passes systemd-analyze verify (no output at all) and rates <= 2.0 in the
offline security check; install.sh and uninstall.sh work in a throwaway root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "dust-agent.service"


def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/setup-system.sh)")
    return exe


def unit_copy(tmp: Path) -> Path:
    """The unit with ExecStart pointed at a binary that exists here (verify checks it)."""
    text = UNIT.read_text().replace("/opt/dust-agent/venv/bin/dust-agent", "/usr/bin/env")
    path = tmp / "dust-agent.service"
    path.write_text(text)
    return path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def test_unit_verifies_silently(tmp_path: Path) -> None:
    out = run(analyze(), "verify", str(unit_copy(tmp_path)))
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_unit_security_rating_at_most_2(tmp_path: Path) -> None:
    out = run(analyze(), "security", "--offline=true", "--threshold=20", str(unit_copy(tmp_path)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "Overall exposure level" in out.stdout


def test_unit_keeps_the_contract() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30s",
        "RestartPreventExitStatus=73 78",
        "SupplementaryGroups=dialout",
        "StateDirectory=dust-agent",
        "ConfigurationDirectory=dust-agent",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=mqtt:/etc/dust-agent/credentials",
    ):
        assert f"\n{line}\n" in text, line


def test_install_upgrade_uninstall_in_a_throwaway_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install = REPO / "systemd" / "install.sh"
    # A real install: the package is built from this checkout and pip-installed into the venv
    # (from PyPI or the local pip cache), so a module missing from the distribution shows here.
    out = run("bash", str(install), "--root", str(root), timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    etc = root / "etc" / "dust-agent"
    assert (root / "etc/systemd/system/multi-user.target.wants/dust-agent.service").is_symlink()
    assert "dust-agent:" in (root / "etc" / "passwd").read_text()
    assert (root / "opt/dust-agent/venv/bin/python").exists()
    assert (root / "opt/dust-agent/src/pyproject.toml").exists()
    assert (etc / "credentials").stat().st_mode & 0o077 == 0
    # The installed agent itself checks the installed example config, profiles and rules.
    installed = root / "opt/dust-agent/venv/bin/dust-agent"
    check = run(str(installed), "check", "-c", str(etc / "agent.toml"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "config " in check.stdout and ": OK" in check.stdout

    # Upgrade in place: the installer's config and the data stay.
    (etc / "agent.toml").write_text((etc / "agent.toml").read_text() + "\n# edited on site\n")
    state = root / "var/lib/dust-agent"
    (state / "outbox.db").write_bytes(b"kept")
    (state / "journal").mkdir()
    out = run("bash", str(install), "--root", str(root), "--no-pip")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "keeping" in out.stdout
    assert "# edited on site" in (etc / "agent.toml").read_text()
    assert (state / "outbox.db").read_bytes() == b"kept" and (state / "journal").is_dir()

    # Uninstall keeps config and data; --purge removes them.
    out = run("bash", str(REPO / "systemd" / "uninstall.sh"), "--root", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (root / "opt/dust-agent").exists()
    assert not (root / "etc/systemd/system/dust-agent.service").exists()
    assert (etc / "agent.toml").exists() and (state / "outbox.db").exists()
    out = run("bash", str(REPO / "systemd" / "uninstall.sh"), "--root", str(root), "--purge")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not etc.exists() and not state.exists()
