"""systemd integration without dependencies: sd_notify and a watchdog fed only by real progress.

Contract: `Watchdog.run()` sends WATCHDOG=1 every half WatchdogSec while `check()` returns None
(all work is progressing) and withholds it while check() names a stall, so systemd kills and
restarts a hung agent instead of a timer keeping it alive. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send one notification (e.g. "READY=1"); False when not under systemd or it failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify(%r) failed: %s", state, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when no watchdog is set for us."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


@dataclass(slots=True)
class Progress:
    """Monotonic "last progress" marks by name, each with the longest silence that is healthy.

    A name that was never marked counts from `created`, so a task that never starts is caught.
    """

    created: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)

    def expect(self, name: str, within: float) -> None:
        self.limits[name] = within

    def forget(self, name: str) -> None:
        self.limits.pop(name, None)
        self.marks.pop(name, None)

    def mark(self, name: str, now: float | None = None) -> None:
        self.marks[name] = time.monotonic() if now is None else now

    def stalled(self, now: float | None = None) -> str | None:
        """None when everything expected progressed in time, else what is stuck."""
        t = time.monotonic() if now is None else now
        late = [
            f"{name} silent for {t - self.marks.get(name, self.created):.0f} s (limit {lim:.0f} s)"
            for name, lim in self.limits.items()
            if t - self.marks.get(name, self.created) > lim
        ]
        return "; ".join(late) or None


class Watchdog:
    """Feeds systemd's watchdog while `check()` is None. Says once when it starts withholding."""

    def __init__(
        self,
        check: Callable[[], str | None],
        interval: float,
        notify: Callable[[str], bool] = sd_notify,
    ) -> None:
        self.check = check
        self.interval = interval
        self._notify = notify
        self.pings = 0
        self.withheld: str | None = None

    def tick(self) -> bool:
        problem = self.check()
        if problem is None:
            if self.withheld is not None:
                log.info("watchdog: work progresses again; pinging systemd")
                self.withheld = None
            self._notify("WATCHDOG=1")
            self.pings += 1
            return True
        if self.withheld is None:
            log.error("watchdog: not pinging systemd, the agent will be restarted: %s", problem)
            self._notify(f"STATUS=stalled: {problem}")
        self.withheld = problem
        return False

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval)


def status_line(parts: Mapping[str, object]) -> str:
    """The STATUS= text `systemctl status` shows, e.g. "2 buses, 16 points; uplink up"."""
    return "; ".join(f"{k} {v}" for k, v in parts.items())


_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class JournalFormatter(logging.Formatter):
    """Under journald: a `<N>` syslog-priority prefix (so `journalctl -p warning` filters by
    level) and the level name, but no timestamp (journald stamps each line itself)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>"
        # journald reads the prefix per line: give continuation lines (tracebacks) one too.
        return "\n".join(prefix + line for line in super().format(record).split("\n"))
