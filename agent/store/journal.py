"""The local alarm journal: append-only JSON lines, fsynced, rotated by size, readable on the box.

Layout in `directory`: `journal.jsonl` (current) and `journal.1.jsonl` ... `journal.<keep>.jsonl`
(older to the right). Disk use is bounded by about (keep + 1) * max_bytes.

Hash chain: every line carries `prev`, the SHA-256 (hex) of the previous line's bytes (across
rotations; GENESIS for the very first line), so `verify_journal` shows that no line was
removed or edited between the oldest kept line and the newest. Its limits: the oldest kept
line's predecessor is rotated away (nothing to compare with), and cutting lines off the end
leaves a valid shorter chain.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from agent.core.model import AlarmEvent

CURRENT = "journal.jsonl"
GENESIS = "0" * 64
_ROTATED = re.compile(r"^journal\.(\d+)\.jsonl$")


def _rotated(directory: Path, n: int) -> Path:
    return directory / f"journal.{n}.jsonl"


def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Appends alarm transitions durably. Not thread-safe; one writer per directory.

    `append` blocks for one fsync (transitions are rare). It raises OSError when the disk
    fails; the caller decides whether that is fatal. A line torn by a power cut is sealed
    with a newline when the journal is reopened, so it never merges with the next record.
    """

    def __init__(self, directory: Path, max_bytes: int, keep: int) -> None:
        if max_bytes <= 0 or keep < 0:
            raise ValueError(f"journal needs max_bytes > 0 and keep >= 0, got {max_bytes}, {keep}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._prev: str | None = None  # hash of the last line written

    def _open(self) -> IO[bytes]:
        if self._file is None:
            path = self.directory / CURRENT
            new = not path.exists()
            f = path.open("ab")
            self._size = f.tell()
            if self._size and not _ends_with_newline(path):
                f.write(b"\n")  # seal a torn last line
                self._size += 1
            if new:
                _fsync_dir(self.directory)
            self._file = f
            if self._prev is None:
                self._prev = _last_hash(self.directory)
        return self._file

    def append(self, events: Sequence[AlarmEvent]) -> None:
        """Write one JSON line per event, then flush and fsync."""
        if not events:
            return
        logged = int(time.time() * 1000)
        f = self._open()
        for event in events:
            record = event.to_record()
            record["logged"] = logged
            record["prev"] = self._prev
            body = orjson.dumps(record)
            line = body + b"\n"
            if self._size and self._size + len(line) > self.max_bytes:
                self._sync(f)
                self._rotate()
                f = self._open()
            f.write(line)
            self._size += len(line)
            self._prev = _hash(body)
        self._sync(f)

    @staticmethod
    def _sync(f: IO[bytes]) -> None:
        f.flush()
        os.fsync(f.fileno())

    def _rotate(self) -> None:
        """journal.jsonl -> journal.1.jsonl -> ... ; the oldest beyond `keep` is deleted."""
        assert self._file is not None
        self._file.close()
        self._file = None
        d = self.directory
        for n in sorted((_index(p) for p in d.iterdir() if _index(p) > 0), reverse=True):
            if n >= self.keep:
                _rotated(d, n).unlink(missing_ok=True)
            else:
                _rotated(d, n).replace(_rotated(d, n + 1))
        if self.keep > 0:
            (d / CURRENT).replace(_rotated(d, 1))
        else:
            (d / CURRENT).unlink(missing_ok=True)
        _fsync_dir(d)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _index(path: Path) -> int:
    """0 for the current file, n for journal.n.jsonl, -1 for anything else."""
    if path.name == CURRENT:
        return 0
    m = _ROTATED.match(path.name)
    return int(m.group(1)) if m else -1


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def journal_files(directory: Path) -> list[Path]:
    """The journal's files, oldest first."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if _index(p) >= 0]
    return sorted(files, key=_index, reverse=True)


def read_journal(directory: Path) -> Iterator[dict[str, Any]]:
    """Every record, oldest first, across rotated files. Unreadable lines (a line torn by a
    power cut) are skipped. A file rotated away while reading is skipped too."""
    for path in journal_files(directory):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_hash(directory: Path) -> str:
    """Hash of the newest complete JSON line in the journal (GENESIS when there is none)."""
    for path in reversed(journal_files(directory)):
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * 1024))
                tail = f.read()
        except FileNotFoundError:
            continue
        for line in reversed(tail.splitlines()):
            try:
                if isinstance(orjson.loads(line), dict):
                    return _hash(line)
            except orjson.JSONDecodeError:
                continue
    return GENESIS


@dataclass
class Verification:
    """The outcome of verify_journal: `ok` unless a line was removed or edited."""

    lines: int = 0
    files: int = 0
    breaks: list[str] = field(default_factory=list)  # chain broken: removed or edited
    notes: list[str] = field(default_factory=list)  # torn lines, rotated-away start

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify_journal(directory: Path) -> Verification:
    """Walk the chain oldest first; report every line whose `prev` is not the hash of the
    line before it."""
    result = Verification()
    prev: str | None = None
    for path in journal_files(directory):
        result.files += 1
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                result.notes.append(f"{where}: torn line (power cut while writing), skipped")
                continue
            if not isinstance(record, dict):
                result.breaks.append(f"{where}: not a journal record")
                continue
            result.lines += 1
            claimed = record.get("prev")
            if claimed is None:
                result.notes.append(f"{where}: written before the hash chain, not verifiable")
            elif prev is None:
                if claimed != GENESIS:
                    result.notes.append(
                        f"{where}: chain starts here (older lines were rotated away)"
                    )
            elif claimed != prev:
                result.breaks.append(
                    f"{where}: does not follow the line before it (a line was removed or edited)"
                )
            prev = _hash(line)
    return result
