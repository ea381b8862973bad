"""Wall-clock quality: is it NTP-synchronised, and did it jump? Scheduling never uses it.

`probe_sync()` answers True / False / None (unknown) from, in order: the DUST_AGENT_CLOCK_SYNC
override ("yes"/"no"), the kernel's adjtimex status (blocked by the unit's ProtectClock=, then
EPERM), systemd-timesyncd's /run/systemd/timesync/synchronized flag, and
`timedatectl show -p NTPSynchronized` (works for chrony and ntpd through systemd-timedated).
Unknown counts as not synchronised on the records.

`ClockMonitor.check()` compares the wall-clock delta with the monotonic delta since the last
check: a difference above `jump_threshold` seconds is a jump (NTP stepping the clock after boot
on a box without an RTC, an operator setting the date).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_OVERRIDE = "DUST_AGENT_CLOCK_SYNC"
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex return value: clock not synchronised
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux); only modes/status/maxerror are read.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def adjtimex_synced() -> bool | None:
    """The kernel's view (modes=0 only reads); None if the call is not allowed or absent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()
    rc = fn(ctypes.byref(tx))
    if rc == -1:
        return None  # EPERM under the unit's syscall filter
    return rc != _TIME_ERROR and not tx.status & _STA_UNSYNC


def timedatectl_synced(timeout: float = 5.0) -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


def probe_sync() -> tuple[bool | None, str]:
    """(synchronised or None if unknown, the source that said so). May block up to ~5 s."""
    forced = os.environ.get(ENV_OVERRIDE, "").strip().lower()
    if forced in ("yes", "no"):
        return forced == "yes", f"${ENV_OVERRIDE}"
    kernel = adjtimex_synced()
    if kernel is not None:
        return kernel, "adjtimex"
    if TIMESYNCD_FLAG.exists():
        return True, str(TIMESYNCD_FLAG)
    tdc = timedatectl_synced()
    if tdc is not None:
        return tdc, "timedatectl"
    return None, "unknown"


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The wall clock moved `step` seconds more than the monotonic clock between two checks."""

    step: float  # seconds; positive = forward
    wall_before: float  # wall clock expected now had it not jumped
    wall_after: float  # wall clock read now

    def to_event(self) -> dict[str, object]:
        return {
            "step_s": round(self.step, 3),
            "expected": round(self.wall_before * 1000),
            "now": round(self.wall_after * 1000),
        }


class ClockMonitor:
    """Sync state (refreshed by `refresh_sync`) and jump detection (`check`), injectable clocks.

    Not thread-safe: `check` from the event loop; `refresh_sync` may run in a worker thread
    (it only replaces two attributes).
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        probe: Callable[[], tuple[bool | None, str]] = probe_sync,
        jump_threshold: float = 2.0,
    ) -> None:
        if jump_threshold <= 0:
            raise ValueError("jump_threshold must be > 0")
        self._wall, self._mono, self._probe = wall, mono, probe
        self.jump_threshold = jump_threshold
        self._last = (self._wall(), self._mono())
        self.sync_state: bool | None = None
        self.sync_source = "not probed yet"
        self.jumps = 0
        self.last_jump: ClockJump | None = None

    def synced(self) -> bool:
        """For the pollers and the forwarder: only a positive answer counts."""
        return self.sync_state is True

    def refresh_sync(self) -> bool:
        """Probe again; return True when the answer changed."""
        state, source = self._probe()
        changed = state != self.sync_state
        self.sync_state, self.sync_source = state, source
        return changed

    def check(self) -> ClockJump | None:
        """Call periodically; returns the jump since the last call, if any."""
        wall, mono = self._wall(), self._mono()
        last_wall, last_mono = self._last
        self._last = (wall, mono)
        expected = last_wall + (mono - last_mono)
        step = wall - expected
        if abs(step) < self.jump_threshold:
            return None
        jump = ClockJump(step=step, wall_before=expected, wall_after=wall)
        self.jumps += 1
        self.last_jump = jump
        return jump

    def check_due(self, every: float) -> ClockJump | None:
        """check(), when at least `every` seconds (monotonic) passed since the last one."""
        if self._mono() - self._last[1] < every:
            return None
        return self.check()

    def snapshot(self) -> dict[str, object]:
        return {
            "synced": self.sync_state,
            "source": self.sync_source,
            "jumps": self.jumps,
            "last_jump": None if self.last_jump is None else self.last_jump.to_event(),
        }
