"""Giving space back: incremental vacuum of the outbox database, in small steps, after a drain.

SQLite keeps the pages of deleted rows as free pages inside the file, so after an outage the
database stays at its high-water size. With `auto_vacuum=INCREMENTAL` (set by `enable()` on a
new file, or switched with one VACUUM at open while the database is small) each
`Reclaimer.step()` moves up to STEP_PAGES pages and truncates the file; the WAL checkpoint
then shrinks the file on disk, and a TRUNCATE checkpoint once the free pages are gone empties
the -wal file too.

A step runs on the store's worker thread after an acknowledgement, at most every STEP_EVERY
seconds, and only when the queue is short (free pages at least as many as used ones): the
poll loop's next put waits for at most one step (1 MiB: 1–16 ms measured here; each round
is logged with its longest step, which bench/soak.py --outage prints). Worker thread only.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.store.cap import pages as cap_pages

log = logging.getLogger("agent.store.outbox")

INCREMENTAL: Final = 2  # PRAGMA auto_vacuum value
SWITCH_MAX_BYTES: Final = 16 * 1024 * 1024  # switch an existing file (one VACUUM) up to this
STEP_PAGES: Final = 256  # pages freed per step (1 MiB with 4 KiB pages)
STEP_EVERY: Final = 0.2  # seconds between steps at least
MIN_FREE_PAGES: Final = 256  # fewer free pages than this are left for reuse by inserts
RETRY_AFTER_ERROR: Final = 60.0


def enable(con: sqlite3.Connection, path: Path) -> bool:
    """Make the database incremental-vacuum capable; True when it is. Call before anything
    else touches a new file (auto_vacuum must be set before the first table)."""
    if con.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
        return True
    con.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if con.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
        return True  # a new file
    pages, free, size = cap_pages(con)
    used = (pages - free) * size
    if used > SWITCH_MAX_BYTES:
        log.info(
            "outbox %s (%d MiB in use) does not give space back yet: it switches to incremental"
            " vacuum at a start when it holds under %d MiB",
            path,
            used >> 20,
            SWITCH_MAX_BYTES >> 20,
        )
        return False
    started = time.perf_counter()
    con.execute("VACUUM")
    log.info(
        "outbox %s switched to incremental vacuum (one VACUUM, %.0f ms)",
        path,
        (time.perf_counter() - started) * 1000,
    )
    return bool(con.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL)


@dataclass(slots=True)
class Reclaimer:
    """Frees pages in steps; counts what it gave back and how long its steps took."""

    enabled: bool = False
    reclaimed_bytes: int = 0
    steps: int = 0
    step_max_s: float = 0.0
    step_total_s: float = 0.0
    _next: float = 0.0
    _active: bool = False  # steps ran since the last TRUNCATE checkpoint
    _round: tuple[int, int, float] = (0, 0, 0.0)  # this round's steps, bytes, longest step

    def step(self, con: sqlite3.Connection, now: float | None = None) -> int:
        """One bounded step when due and the queue is short; bytes given back (0: none)."""
        t = time.monotonic() if now is None else now
        if not self.enabled or t < self._next:
            return 0
        self._next = t + STEP_EVERY
        try:
            return self._step(con)
        except sqlite3.Error as exc:  # e.g. a full disk: never fail the ack that called us
            log.warning("outbox: giving free pages back failed (%s); retrying later", exc)
            self._next = t + RETRY_AFTER_ERROR
            return 0

    def _step(self, con: sqlite3.Connection) -> int:
        pages, free, size = cap_pages(con)
        if free < MIN_FREE_PAGES or free < pages - free:
            if free < MIN_FREE_PAGES and self._active:
                self._finish(con)
            return 0
        started = time.perf_counter()
        # executescript steps the pragma to the end; execute() would free a single page
        # (the pragma yields one zero-column row per page, which sqlite3 does not step through)
        con.executescript(f"PRAGMA incremental_vacuum({STEP_PAGES});")
        took = time.perf_counter() - started
        freed = (free - int(con.execute("PRAGMA freelist_count").fetchone()[0])) * size
        self.steps += 1
        self.step_total_s += took
        self.step_max_s = max(self.step_max_s, took)
        self.reclaimed_bytes += freed
        self._active = True
        steps, done, longest = self._round
        self._round = (steps + 1, done + freed, max(longest, took))
        return freed

    def _finish(self, con: sqlite3.Connection) -> None:
        """The free pages are gone: empty the WAL too and say what was given back."""
        self._active = False
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        steps, done, longest = self._round
        self._round = (0, 0, 0.0)
        log.info(
            "outbox gave %.1f MiB back to the filesystem in %d steps (longest %.1f ms)",
            done / 2**20,
            steps,
            longest * 1000,
        )
