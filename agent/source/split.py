"""Finding the register behind an "illegal data address" (Modbus exception 2) in a block read.

A block spans its points and the unused registers between them (the plan's gap fill). When a
device refuses the block, the offending register is either a gap register the device does
not map (a hole) or a point's own register. The search:

- a block with gaps is split at the gap nearest its middle and both halves are read: for one
  hole in a gap that costs 2 extra requests, and both halves are the new plan;
- a block without gaps (its points cover every register) is bisected: read the left half;
  if it answers, the right half must hold the bad register (no gap is left to blame), so only
  a half that is refused or unknown is read again;
- a refused part of a single register (or several bit fields of one register) is the bad
  point: it is marked bad and no longer read.

Every sub-read that answers keeps its values for this cycle and becomes a request of the
plan from then on. Declared `holes` keep known holes out of the plan in the first place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.source.plan import BusPlan
from drivers.base import Block, RawBlock, SourceError, SourceProtocolError

ILLEGAL_ADDRESS = 2  # Modbus exception code


@dataclass(slots=True)
class ReadOp:
    """One request of the cycle: its block, where it lands in the buffer, the points it serves."""

    block: Block
    offset: int
    pos: npt.NDArray[np.intp]  # frame positions of its points


Reader = Callable[[Block], Awaitable[RawBlock]]
Outcome = Callable[[ReadOp, RawBlock | SourceError], None]


@dataclass(slots=True)
class SplitResult:
    good: list[ReadOp]  # the requests that replace the refused one, in address order
    bad: list[int]  # frame positions of the points on illegal addresses
    requests: int  # extra requests the search made


class BlockSplitter:
    """Runs the search for one refused block; `read` is the poller's request (with its busy
    retries) and `outcome` stores or marks each sub-read's result."""

    def __init__(self, plan: BusPlan, read: Reader, outcome: Outcome) -> None:
        self.plan = plan
        self._read = read
        self._outcome = outcome

    async def split(self, op: ReadOp) -> SplitResult:
        res = SplitResult([], [], 0)
        stack: list[tuple[ReadOp, bool]] = [(op, True)]  # (part, known to hold a bad register)
        while stack:
            part, known_bad = stack.pop()
            if not known_bad and not await self._try(part, res):
                continue
            if len(np.unique(self.plan.point_address[part.pos])) == 1:
                res.bad.extend(int(i) for i in part.pos)
                continue
            left, right, gap = self._halves(op, part)
            if gap:  # the hole may be in the gap: both halves must be read
                stack += [(right, False), (left, False)]
            elif await self._try(left, res):
                stack += [(right, False), (left, True)]
            else:  # the left half answered: the bad register is in the right half
                stack.append((right, True))
        res.good.sort(key=lambda o: o.block.address)
        return res

    async def _try(self, part: ReadOp, res: SplitResult) -> bool:
        """Read `part`; True if the device refused it with exception 2 (still to be searched);
        otherwise its result is kept and it joins the plan."""
        res.requests += 1
        try:
            raw = await self._read(part.block)
        except SourceProtocolError as exc:
            if exc.code == ILLEGAL_ADDRESS:
                return True
            self._outcome(part, exc)
        except SourceError as exc:  # not decidable now: keep it as one request
            self._outcome(part, exc)
        else:
            self._outcome(part, raw)
        res.good.append(part)
        return False

    def _halves(self, root: ReadOp, part: ReadOp) -> tuple[ReadOp, ReadOp, bool]:
        """Split `part` at the gap nearest its middle, else at its middle address; the flag says
        whether unused registers lie between the halves."""
        addr = self.plan.point_address[part.pos]
        end = addr + self.plan.point_width[part.pos]
        order = np.argsort(addr, kind="stable")
        a, e = addr[order], np.maximum.accumulate(end[order])
        starts = np.flatnonzero(a[1:] > e[:-1]) + 1  # first point after each gap
        if len(starts):
            middle = (int(a[0]) + int(e[-1])) / 2
            cut = int(a[starts[np.argmin(np.abs(a[starts] - middle))]])
        else:
            uniq = np.unique(a)
            cut = int(uniq[len(uniq) // 2])
        left, right = part.pos[addr < cut], part.pos[addr >= cut]
        gap = bool(len(starts))
        return self._sub(root, left), self._sub(root, right), gap

    def _sub(self, root: ReadOp, pos: npt.NDArray[np.intp]) -> ReadOp:
        addr = self.plan.point_address[pos]
        first = int(addr.min())
        count = int((addr + self.plan.point_width[pos]).max()) - first
        blk = root.block
        return ReadOp(
            Block(blk.unit_id, blk.table, first, count), root.offset + first - blk.address, pos
        )
