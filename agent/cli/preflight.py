"""Checks of the box before anything runs: the storage directory is writable by the service
user (`check`, and `run` at start: exit 73), serial ports exist (a warning)."""

from __future__ import annotations

import errno
import os
import pwd
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config.uplink import MIB, filesystem_bytes
from agent.core.model import AgentConfig

EX_CANTCREAT = 73  # sysexits.h: cannot create an output file; the unit does not restart on it
SERVICE_USER = "dust-agent"  # User= in systemd/dust-agent.service
STATE_DIRECTORY = Path("/var/lib/dust-agent")  # StateDirectory=dust-agent: systemd creates it
BY_ID = Path("/dev/serial/by-id")
# A disk fault, not an ownership mistake: the agent runs on (polling, alarming, reporting
# storage_error in its health message) and stores again once the disk recovers.
DISK_FAULTS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})
_FAULT = "~"  # prefix of a problem text that is a disk fault (passes the child's pipe)


@dataclass(frozen=True)
class Account:
    """The OS user a check runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def account(name: str) -> Account:
    """The account `name` (KeyError if there is none)."""
    pw = pwd.getpwnam(name)
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)))


def service_account(requested: str | None) -> Account | None:
    """Whom `check` checks for: `--user NAME`; as root by default the service user when that
    user exists; None: this process's own user. KeyError for an unknown `--user`."""
    if requested is not None:
        return account(requested)
    if os.geteuid() == 0:
        try:
            return account(SERVICE_USER)
        except KeyError:
            return None
    return None


OWN_DIRS = frozenset({"journal", "history"})  # folders the agent keeps in storage.dir
# files written in place (the database and its -wal/-shm); alarm_state.json and status.json are
# replaced by a rename, which needs only the directory
OWN_FILES = ("outbox.db",)


def _ours(path: Path, storage: Path) -> bool:
    """A file or folder the agent writes in its storage directory."""
    if path.parent != storage:  # inside journal/ or history/
        return path.is_file()
    if path.is_dir():
        return path.name in OWN_DIRS
    return path.is_file() and path.name.startswith(OWN_FILES)


def _writable(directory: Path) -> str | None:
    """What stops this process from keeping its files in `directory`, or None."""
    try:
        return _writable_or_raise(directory)
    except OSError as exc:
        return f"cannot reach {exc.filename or directory} ({exc.strerror})"


def _writable_or_raise(directory: Path) -> str | None:
    if directory.exists():
        if not directory.is_dir():
            return f"{directory} is not a directory"
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=".dust-agent-check-")
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            fault = _FAULT if exc.errno in DISK_FAULTS else ""
            return f"{fault}cannot create files in {directory} ({exc.strerror})"
        journal = directory / "journal"
        entries = [*directory.iterdir(), *(journal.iterdir() if journal.is_dir() else [])]
        # the agent's own files and folders; anything else (e.g. junk at the operator socket's
        # path, which the agent reports itself) is not for this check
        ours = [p for p in entries if _ours(p, directory)]
        bad = [p for p in ours if not p.name.startswith(".") and not os.access(p, os.W_OK)]
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            return f"{bad[0]}{more} in the storage directory cannot be written"
        return None
    parent = next((p for p in directory.parents if p.exists()), Path("/"))
    if directory == STATE_DIRECTORY or os.access(parent, os.W_OK | os.X_OK):
        return None  # it will be created (by systemd's StateDirectory=, or by the agent)
    return f"{directory} does not exist and {parent} does not let this user create it"


def _as(user: Account, fn: Callable[[], str | None]) -> str | None:
    """`fn()` run in a child process with `user`'s uid and groups (we are root)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            os.close(r)
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            os.write(w, (fn() or "").encode())
        except BaseException as exc:  # reported by the parent
            os.write(w, f"cannot check as user {user.name}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return out or None


@dataclass(frozen=True)
class StorageProblem:
    """What stops the service user from writing the storage, with the fix. `fatal`: an
    ownership or permission mistake (no restart fixes it: exit 73); else a disk fault
    (read-only, full) the running agent reports and rides out."""

    text: str
    fatal: bool


def storage_problem(directory: Path, user: Account | None) -> StorageProblem | None:
    """What stops `user` (None: this process) from writing the storage, or None."""
    if user is None or user.uid == os.geteuid():
        problem = _writable(directory)
        who = user.name if user else _me()
    else:
        problem = _as(user, lambda: _writable(directory))
        who = user.name
    if problem is None:
        return None
    fatal = not problem.startswith(_FAULT)
    problem = problem.removeprefix(_FAULT)
    if not fatal:
        fix = "remount it read-write or free space; the agent stores again once it can"
    elif "is not a directory" in problem:
        fix = f"move {directory} aside, or set storage.dir to a directory {who} owns"
    else:
        fix = (
            f"chown -R {who}: {directory} (or set storage.dir to a directory {who} owns; "
            f"the systemd unit creates {STATE_DIRECTORY} for it)"
        )
    return StorageProblem(
        f"storage directory {directory}: {problem}, as user {who}. Fix: {fix}", fatal
    )


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def serial_port_warnings(ports: Sequence[tuple[str, str]], by_id: Path = BY_ID) -> list[str]:
    """A warning per serial port (`where`, path) that does not exist, listing by-id names."""
    missing = [(where, p) for where, p in ports if not os.path.exists(p)]
    if not missing:
        return []
    try:
        present = sorted(str(p) for p in by_id.iterdir())
    except OSError:
        present = []
    listed = (
        "present: " + ", ".join(present)
        if present
        else f"no {by_id} entries: no USB serial adapter is plugged in"
    )
    return [
        f"{where}: serial port {p} does not exist (adapter unplugged, or another name?); {listed}"
        for where, p in missing
    ]


def cap_warnings(cfg: AgentConfig) -> list[str]:
    """An explicit storage.max_mb above the size of the filesystem that holds storage.dir."""
    fs = filesystem_bytes(cfg.storage.dir)
    if fs is None or cfg.storage.max_bytes <= fs:
        return []
    return [
        f"{cfg.path}: storage.max_mb: {cfg.storage.max_bytes // MIB} MiB is more than the "
        f"{fs // MIB} MiB filesystem holding {cfg.storage.dir}: the disk fills before the cap "
        "drops old telemetry; leave max_mb out (default: at most 50 % of the filesystem) or "
        "lower it"
    ]
