"""The local alarm journal: append-only JSON lines, fsynced, rotated by size, readable on the box.

Layout in `directory`: `journal.jsonl` (current) and `journal.1.jsonl` ... `journal.<keep>.jsonl`
(older to the right). Disk use is bounded by about (keep + 1) * max_bytes.

Hash chain: every line carries `n` (its line number since the journal began, across
rotations) and `prev`, the digest of the previous line's bytes (GENESIS for line 1). The
digest is SHA-256, or HMAC-SHA256 under `storage.journal_hmac_key_file` when one is set (such
lines say `"mac": "hmac-sha256"`). The chain head (`n` and digest of the newest line) goes
upstream with every alarm record and in the health message: the platform holds anchors.

What `verify_journal` detects: a line removed or edited between the oldest kept line and the
newest; with an anchor (`LINES:HASH` from the platform), a journal that does not contain that
line unchanged (a rewrite with recomputed hashes, lines cut off the end up to the anchor);
with the HMAC key, a rewrite by anyone who lacks the key. What it cannot detect: without an
anchor or key, a full rewrite with recomputed hashes, or lines cut off the end; lines written
after the newest anchor the platform holds; anything in lines already rotated away.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from agent.core.model import AlarmEvent

log = logging.getLogger(__name__)

CURRENT = "journal.jsonl"
GENESIS = "0" * 64
MAC = "hmac-sha256"
FILE_MODE = 0o640  # readable by the operators group (docs/operations.md)
DIR_MODE = 0o2750  # setgid: new files inherit the directory's group
_ROTATED = re.compile(r"^journal\.(\d+)\.jsonl$")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A journal line's number since the journal began and its digest: an anchor."""

    lines: int
    hash: str

    def to_json(self) -> dict[str, object]:
        return {"lines": self.lines, "hash": self.hash}

    def __str__(self) -> str:
        return f"{self.lines}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """`LINES:HASH` (as `dust-agent alarms --verify --anchor` takes it); ValueError."""
        lines, _, digest = text.strip().partition(":")
        if not lines.isdigit() or int(lines) < 1 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"anchor {text!r}: expected LINES:HASH, e.g. 42:<64 hex digits>")
        return cls(int(lines), digest)


def digest(line: bytes, key: bytes | None) -> str:
    """The chain digest of one journal line (without its newline)."""
    if key is None:
        return hashlib.sha256(line).hexdigest()
    return hmac.new(key, line, hashlib.sha256).hexdigest()


def stamp(events: Sequence[AlarmEvent], heads: Sequence[ChainHead]) -> list[AlarmEvent]:
    """The events with their journal line's anchor as `journal` (sent upstream with them)."""
    return [
        replace(e, extra={**e.extra, "journal": h.to_json()})
        for e, h in zip(events, heads, strict=True)
    ]


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

    `append` blocks for one fsync (transitions are rare) and returns each event's ChainHead.
    It raises OSError when the disk fails; the caller decides whether that is fatal. A line
    torn by a power cut is sealed with a newline when the journal is reopened, so it never
    merges with the next record. `gid`: the group the files are given (the operators group).
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        keep: int,
        *,
        hmac_key: bytes | None = None,
        gid: int | None = None,
    ) -> None:
        if max_bytes <= 0 or keep < 0:
            raise ValueError(f"journal needs max_bytes > 0 and keep >= 0, got {max_bytes}, {keep}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        self._key = hmac_key
        self._gid = gid
        directory.mkdir(parents=True, exist_ok=True)
        for path in (directory, *journal_files(directory)):  # files from before an upgrade too
            self._share(path, DIR_MODE if path == directory else FILE_MODE)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._head: ChainHead | None = None  # the last line written

    def _share(self, path: Path, mode: int) -> None:
        """Give `path` the operators group and `mode`; a failure is logged, not fatal."""
        if self._gid is None:
            return
        try:
            os.chown(path, -1, self._gid)
            os.chmod(path, mode)
        except OSError as exc:
            log.warning(
                "cannot give %s to group %d (%s): operators cannot read it", path, self._gid, exc
            )

    @property
    def head(self) -> ChainHead:
        """The newest line's number and digest (0 and GENESIS for an empty journal)."""
        if self._head is None:
            self._head = last_head(self.directory, self._key)
        return self._head

    def _open(self) -> IO[bytes]:
        if self._file is None:
            path = self.directory / CURRENT
            new = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
            f = os.fdopen(fd, "ab")
            self._size = f.tell()
            if self._size and not _ends_with_newline(path):
                f.write(b"\n")  # seal a torn last line
                self._size += 1
            if new:
                self._share(path, FILE_MODE)
                _fsync_dir(self.directory)
            self._file = f
        return self._file

    def append(self, events: Sequence[AlarmEvent]) -> list[ChainHead]:
        """Write one JSON line per event, then flush and fsync; each line's ChainHead."""
        if not events:
            return []
        logged = int(time.time() * 1000)
        f = self._open()
        head = self.head
        heads: list[ChainHead] = []
        for event in events:
            record = event.to_record()
            record["logged"] = logged
            record["n"] = head.lines + 1
            record["prev"] = head.hash
            if self._key is not None:
                record["mac"] = MAC
            body = orjson.dumps(record)
            line = body + b"\n"
            if self._size and self._size + len(line) > self.max_bytes:
                self._sync(f)
                self._rotate()
                f = self._open()
            f.write(line)
            self._size += len(line)
            head = self._head = ChainHead(head.lines + 1, digest(body, self._key))
            heads.append(head)
        self._sync(f)
        return heads

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


def last_head(directory: Path, key: bytes | None = None) -> ChainHead:
    """Number and digest of the newest complete JSON line (0 and GENESIS when none). A line
    written before line numbers existed counts the kept lines instead."""
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
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                n = record.get("n")
                if not isinstance(n, int) or isinstance(n, bool):
                    n = sum(1 for _ in read_journal(directory))
                return ChainHead(n, digest(line, key))
    return ChainHead(0, GENESIS)


@dataclass
class Verification:
    """The outcome of verify_journal: `ok` unless a line was removed or edited or the
    journal does not match the anchor; `checked` unless something could not be checked."""

    lines: int = 0
    files: int = 0
    breaks: list[str] = field(default_factory=list)  # chain broken, or the anchor not matched
    notes: list[str] = field(default_factory=list)  # torn lines, rotated-away start
    unchecked: list[str] = field(default_factory=list)  # keyed links without the key, ...
    head: ChainHead | None = None  # the newest line
    anchor_matched: bool = False

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def checked(self) -> bool:
        return not self.unchecked


@dataclass
class _Walk:
    key: bytes | None
    anchor: ChainHead | None
    result: Verification = field(default_factory=Verification)
    prev: bytes | None = None  # the previous line's bytes
    first_n: int | None = None
    keyed_without_key: int = 0

    def line(self, where: str, line: bytes, record: dict[str, Any]) -> None:
        result = self.result
        result.lines += 1
        keyed = record.get("mac") == MAC
        claimed, n = record.get("prev"), record.get("n")
        if keyed and self.key is None:
            self.keyed_without_key += 1
        elif claimed is None:
            result.notes.append(f"{where}: written before the hash chain, not verifiable")
        elif self.prev is None:
            if claimed != GENESIS:
                result.notes.append(f"{where}: chain starts here (older lines were rotated away)")
        elif claimed != digest(self.prev, self.key if keyed else None):
            result.breaks.append(
                f"{where}: does not follow the line before it (a line was removed or edited)"
            )
        self.prev = line
        if isinstance(n, int) and not isinstance(n, bool):
            self.first_n = n if self.first_n is None else self.first_n
            result.head = ChainHead(n, digest(line, self.key if keyed else None))
            if self.anchor is not None and n == self.anchor.lines:
                self._anchor(where, line, keyed)

    def _anchor(self, where: str, line: bytes, keyed: bool) -> None:
        assert self.anchor is not None
        if keyed and self.key is None:
            self.result.unchecked.append(f"{where}: the anchor line is keyed; give the key file")
        elif digest(line, self.key if keyed else None) == self.anchor.hash:
            self.result.anchor_matched = True
        else:
            self.result.breaks.append(
                f"{where}: differs from the anchor {self.anchor} (the journal was rewritten)"
            )

    def finish(self) -> Verification:
        result, anchor = self.result, self.anchor
        if self.keyed_without_key:
            result.unchecked.append(
                f"{self.keyed_without_key} keyed line(s) (HMAC): links not checked without "
                "the key file (storage.journal_hmac_key_file)"
            )
        if anchor is None or result.anchor_matched or result.breaks:
            return result
        last = result.head.lines if result.head is not None else 0
        if last < anchor.lines:
            result.breaks.append(
                f"the journal ends at line {last} but the anchor is line {anchor.lines}: lines "
                "were removed from the end, or the journal was replaced"
            )
        elif self.first_n is not None and self.first_n > anchor.lines:
            result.unchecked.append(
                f"anchor line {anchor.lines} was rotated away (oldest kept: {self.first_n})"
            )
        else:
            result.unchecked.append(f"anchor line {anchor.lines} not found in the journal")
        return result


def verify_journal(
    directory: Path, *, key: bytes | None = None, anchor: ChainHead | None = None
) -> Verification:
    """Walk the chain oldest first; report every line whose `prev` is not the digest of the
    line before it, and whether the line numbered `anchor.lines` has the anchor's digest."""
    walk = _Walk(key, anchor)
    for path in journal_files(directory):
        walk.result.files += 1
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
                walk.result.notes.append(f"{where}: torn line (power cut while writing), skipped")
                continue
            if not isinstance(record, dict):
                walk.result.breaks.append(f"{where}: not a journal record")
                continue
            walk.line(where, line, record)
    return walk.finish()
