"""The disk under a Store contract test, in three modes, and a ledger of what went in and out.

- `normal`: a directory on the test machine's disk; it never refuses a write;
- `full`: a 4 MiB tmpfs that fills up while the outbox runs (a ballast file takes the free
  space, then the agent's own telemetry fills the rest until a write fails);
- `readonly`: a tmpfs that is read-only when the outbox opens.

`refuse()` brings the mode's failure about (nothing for `normal`), `repair()` ends it (the
ballast is deleted, the filesystem is made writable). The tmpfs modes need root (mount(8)).
Only the public APIs of agent.store.outbox (Outbox, its consumer handles) and
agent.store.guard (StoreGuard) are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.store.guard import StoreGuard
from agent.store.outbox import Batch, Entry, Outbox, OutboxConsumer, Stream

CONSUMERS = ("plant", "province")  # two uplinks; neither name is special to the outbox
SETTLE_S = 10.0  # upper bound for the guard and the outbox to recover after a repair


def _mount(*args: str) -> None:
    got = subprocess.run(["mount", *args], check=False, capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, f"mount {' '.join(args)}: {got.stderr.strip()}"


class Disk:
    def __init__(self, mode: str, tmp: Path) -> None:
        self.mode = mode
        self.dir = tmp / "state"
        self.mounted = False
        self.refused = False  # a write was refused at some point

    @property
    def refusing_mode(self) -> bool:
        return self.mode != "normal"

    def prepare(self) -> None:
        """Before the outbox opens."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.mode == "normal":
            return
        if os.geteuid() != 0:
            pytest.fail("the disk-full and read-only store modes mount a tmpfs: run as root")
        _mount("-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(self.dir))
        self.mounted = True
        if self.mode == "readonly":
            _mount("-o", "remount,ro", str(self.dir))

    async def refuse(self, put_filler: Callable[[], Awaitable[bool]]) -> None:
        """Make writes fail; `put_filler()` stores one large telemetry entry through the guard
        and says whether the guard now reports a storage error."""
        if self.mode == "normal":
            return
        if self.mode == "full":
            self._fill()
        for _ in range(500):
            if await put_filler():
                self.refused = True
                return
        raise AssertionError(f"{self.mode}: the disk never refused a write")

    def repair(self) -> None:
        if self.mode == "full":
            (self.dir / "ballast").unlink(missing_ok=True)
        elif self.mode == "readonly":
            _mount("-o", "remount,rw", str(self.dir))

    def unmount(self) -> None:
        if not self.mounted:
            return
        got = subprocess.run(["umount", str(self.dir)], check=False, capture_output=True)
        if got.returncode != 0:
            subprocess.run(["umount", "-l", str(self.dir)], check=False, capture_output=True)
        self.mounted = False

    def _fill(self) -> None:
        fd = os.open(self.dir / "ballast", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * chunk)
            with pytest.raises(OSError) as full:
                os.write(fd, b"\0" * 512)
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Got:
    """One delivered row."""

    stream: str
    seq_first: int
    n: int
    body: Any  # decoded JSON
    backfill: bool


@dataclass
class Ledger:
    """Markers put per stream, in order; telemetry markers are one per record."""

    put: dict[str, list[int]] = field(default_factory=lambda: {"alarm": [], "telemetry": []})
    next_marker: int = 0

    def entry(self, stream: Stream, n: int = 1, pad: int = 0) -> Entry:
        marks = list(range(self.next_marker, self.next_marker + n))
        self.next_marker += n
        self.put[stream] += marks
        body = orjson.dumps({"marks": marks, "pad": "x" * pad})
        return Entry(stream, n, body, time.time())


class Store:
    """An Outbox with its StoreGuard on a Disk, as the agent wires them."""

    def __init__(self, disk: Disk, max_bytes: int = 64 << 20) -> None:
        self.disk = disk
        self.max_bytes = max_bytes
        self.ledger = Ledger()
        self.outbox = self._new()
        self.guard = StoreGuard(self.outbox)

    def _new(self) -> Outbox:
        return Outbox(self.disk.dir / "outbox.db", self.max_bytes, consumers=CONSUMERS)

    def consumer(self, name: str = CONSUMERS[0]) -> OutboxConsumer:
        return self.outbox.consumer(name)

    async def put(self, stream: Stream, n: int = 1, pad: int = 0) -> None:
        await self.guard.put([self.ledger.entry(stream, n, pad)])

    async def filler(self) -> bool:
        await self.put("telemetry", 1, pad=64 << 10)
        return self.guard.error is not None

    async def reopen(self) -> None:
        """Close and open again: a restart of the agent (the guard starts empty too)."""
        await self.outbox.close()
        self.outbox = self._new()
        await self.outbox.open()
        self.guard = StoreGuard(self.outbox)

    async def settle(self) -> None:
        """After a repair: until the guard has stored what it held (it retries on puts)."""
        async with asyncio.timeout(SETTLE_S):
            while self.guard.error is not None or self.guard.held:
                await self.guard.put([])
                if self.guard.error is not None:
                    await asyncio.sleep(0.05)  # the guard retries at most once a second

    async def drain(self, name: str = CONSUMERS[0], ack: bool = True) -> list[Got]:
        """Everything the consumer can get now, batch by batch (acked unless `ack` is False,
        then kept)."""
        c = self.consumer(name)
        out: list[Got] = []
        kept: list[Batch] = []
        while (batch := await c.begin(50)) is not None:
            out += rows(batch)
            if ack:
                await c.ack(batch)
            else:
                kept.append(batch)
        for b in kept:
            c.keep(b)
        return out


def rows(batch: Batch) -> list[Got]:
    return [
        Got(batch.stream, r.seq_first, r.n, orjson.loads(r.body), batch.backfill)
        for r in batch.rows
    ]


def marks(got: list[Got], stream: str) -> list[int]:
    return [m for g in got if g.stream == stream for m in g.body["marks"]]


def seqs(got: list[Got], stream: str) -> list[int]:
    return [s for g in got if g.stream == stream for s in range(g.seq_first, g.seq_first + g.n)]


def events(got: list[Got], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for g in got if g.stream == "event" for e in g.body if e["kind"] == kind]
