"""agent.service.malloc: with the threshold fixed, a 300 KB block gets its own mapping even
after a large mapped block was freed (glibc's dynamic threshold would serve it from the heap,
which then stays grown). Checked with glibc's own mallinfo2 in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    from agent.service import malloc
    assert malloc.tune()
big = ctypes.create_string_buffer(8 << 20)  # mapped; freeing it raises the dynamic threshold
del big
before = libc.mallinfo2().hblkhd
block = ctypes.create_string_buffer(300_000)
print(libc.mallinfo2().hblkhd - before)
"""


def _mapped_growth(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_large_blocks_keep_their_own_mapping_after_tune() -> None:
    if not sys.platform.startswith("linux"):
        pytest.fail("the agent runs on Linux (glibc)")
    assert _mapped_growth("default") == 0  # glibc's default: served from the heap
    assert _mapped_growth("tuned") >= 300_000
