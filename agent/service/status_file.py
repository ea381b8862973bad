"""The status snapshot `{storage.dir}/status.json`: named sections, one file, replaced atomically.

Several parts of the running agent own a section each (e.g. "buses", "clock", "outbox",
"uplink"); `update()` replaces one section in memory and `write()` publishes all of them at
once (write a temporary file in the same directory, fsync it, rename over the old one), so a
reader such as `dust-agent status` never sees a half-written file. Size is bounded by what
the sections hold (one entry per bus, device, active alarm).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

STATUS_NAME = "status.json"
STATUS_VERSION = 1


class StatusFile:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATUS_NAME
        self.sections: dict[str, Any] = {}

    def update(self, section: str, data: Any) -> None:
        self.sections[section] = data

    def write(self, now: float | None = None) -> None:
        """Atomically replace the file with every section; raises OSError on a disk error."""
        doc = {
            "v": STATUS_VERSION,
            "written": round((time.time() if now is None else now) * 1000),
            **self.sections,
        }
        body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2)
        fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=self.path.parent)
        try:
            # no fsync: a snapshot rewritten every few seconds; the rename keeps readers from
            # ever seeing half a file, and a power cut at worst leaves an older or empty one
            # (read_status reports it). An fsync here cost CPU and, on an SD card, wear.
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.chmod(tmp, 0o640)  # the service group (operators) may read it
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def read_status(path: Path) -> dict[str, Any]:
    """The last snapshot; OSError when missing or unreadable, ValueError when not JSON."""
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data
