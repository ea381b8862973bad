"""The read plan: points compiled once into per-bus block reads and a decode table."""

from __future__ import annotations

import bisect
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.core.model import AgentConfig, BusSpec, PointSpec
from agent.source.decode import Decoder, DecodeSpec
from drivers.base import BIT_TABLES, Block, Table, max_count
from drivers.registry import driver

# Assumed for the cycle-time estimate printed by `dust-agent check` (requests: the drivers).
DECODE_PER_POINT_S = 2e-6


@dataclass(frozen=True, eq=False)
class BusPlan:
    """Everything one bus task needs per cycle.

    The cycle buffer is the blocks' registers concatenated: block `b` occupies
    `buffer[block_offsets[b] : block_offsets[b] + blocks[b].count]`. Frame order is the order
    of `point_index` (ascending PointSpec.index); `point_block[i]` is the block that holds
    point i, so a failed block's status broadcasts to its points with one gather.
    """

    bus: BusSpec
    blocks: tuple[Block, ...]
    block_offsets: tuple[int, ...]
    buffer_size: int
    point_index: npt.NDArray[np.intp]
    point_block: npt.NDArray[np.intp]
    point_keys: tuple[str, ...]  # "device.key" per point, in frame order (for logs)
    decoder: Decoder
    # per point, in frame order: first register (or bit) address and width, for block splits
    point_address: npt.NDArray[np.intp]
    point_width: npt.NDArray[np.intp]
    unit_devices: dict[int, tuple[str, ...]]  # device names per unit id on this bus

    @property
    def registers(self) -> int:
        return self.buffer_size

    def block_points(self, b: int) -> tuple[str, ...]:
        return tuple(k for k, pb in zip(self.point_keys, self.point_block, strict=True) if pb == b)


def compile_plan(
    points: Sequence[PointSpec], buses: Sequence[BusSpec], max_gap: int = 4
) -> tuple[BusPlan, ...]:
    """Compile one BusPlan per bus (in the order of `buses`, including buses without points).

    Per (unit_id, table), points sorted by address are merged into one block while the next
    point starts at most `max_gap` unused registers after the block's end, the block stays
    within MAX_REGISTERS_PER_READ and the gap holds none of the device's declared `holes`.
    Overlapping points are merged without complaint (the config loader rejects them; the
    planner only must not break on them).
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    known = {b.name for b in buses}
    for p in points:
        if p.bus not in known:
            raise ValueError(f"point {p.device}.{p.key} refers to unknown bus {p.bus!r}")
    return tuple(
        _compile_bus(bus, [p for p in points if p.bus == bus.name], max_gap) for bus in buses
    )


def compile_config_plan(cfg: AgentConfig, max_gap: int = 4) -> tuple[BusPlan, ...]:
    return compile_plan(cfg.points, cfg.buses, max_gap)


def _compile_bus(bus: BusSpec, points: list[PointSpec], max_gap: int) -> BusPlan:
    groups: dict[tuple[int, Table, bool], list[PointSpec]] = {}
    for p in points:
        groups.setdefault((p.unit_id, p.table, p.read_mode == "point"), []).append(p)
    blocks: list[Block] = []
    offsets: list[int] = []
    where: dict[int, tuple[int, int]] = {}  # point index -> (block number, word in buffer)
    size = 0
    for (unit, table, one_by_one), members in sorted(groups.items()):
        # point mode: only points sharing registers (bit fields) share a request
        gap = -1 if one_by_one else max_gap * (16 if table in BIT_TABLES else 1)
        holes = sorted({h for p in members for h in p.holes})
        for start, count, served in _merge(members, gap, max_count(table), holes):
            b = len(blocks)
            blocks.append(Block(unit_id=unit, table=table, address=start, count=count))
            offsets.append(size)
            for p in served:
                where[p.index] = (b, size + p.address - start)
            size += count
    ordered = sorted(points, key=lambda p: p.index)
    specs = [
        DecodeSpec(
            where[p.index][1],
            "uint16" if p.table in BIT_TABLES else p.type,
            p.order,
            p.scale,
            p.offset,
            -1 if p.bit is None else p.bit,
        )
        for p in ordered
    ]
    devices: dict[int, set[str]] = {}
    for p in ordered:
        devices.setdefault(p.unit_id, set()).add(p.device)
    return BusPlan(
        bus=bus,
        blocks=tuple(blocks),
        block_offsets=tuple(offsets),
        buffer_size=size,
        point_index=_frozen(np.array([p.index for p in ordered], dtype=np.intp)),
        point_block=_frozen(np.array([where[p.index][0] for p in ordered], dtype=np.intp)),
        point_keys=tuple(_device_key(p) for p in ordered),
        decoder=Decoder(specs),
        point_address=_frozen(np.array([p.address for p in ordered], dtype=np.intp)),
        point_width=_frozen(np.array([p.width for p in ordered], dtype=np.intp)),
        unit_devices={u: tuple(sorted(d)) for u, d in sorted(devices.items())},
    )


def _merge(
    members: list[PointSpec], max_gap: int, limit: int, holes: Sequence[int] = ()
) -> list[tuple[int, int, list[PointSpec]]]:
    """Greedy merge of one (unit, table) group into (start, count, points) runs; a run never
    spans a register listed in `holes` (sorted)."""
    runs: list[tuple[int, int, list[PointSpec]]] = []
    start = end = 0  # end is exclusive
    served: list[PointSpec] = []
    for p in sorted(members, key=lambda p: (p.address, -p.width)):
        p_end = p.address + p.width
        if (
            served
            and p.address - end <= max_gap
            and max(end, p_end) - start <= limit
            and not _hole_in(holes, end, p.address)
        ):
            end = max(end, p_end)
            served.append(p)
            continue
        if served:
            runs.append((start, end - start, served))
        start, end, served = p.address, p_end, [p]
    if served:
        runs.append((start, end - start, served))
    return runs


def _hole_in(holes: Sequence[int], lo: int, hi: int) -> bool:
    """True if a hole lies in [lo, hi)."""
    i = bisect.bisect_left(holes, lo)
    return i < len(holes) and holes[i] < hi


def _frozen(a: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    a.flags.writeable = False
    return a


def request_s(bus: BusSpec, block: Block) -> float:
    """Estimated time of one healthy request on `bus`, by the bus's driver (registered
    estimate, e.g. drivers.modbus: wire time at the baud, gaps, a LAN round trip)."""
    return driver(bus.type).request_s(bus, block)


def estimate_cycle_s(plan: BusPlan) -> float:
    """Estimated time of one healthy cycle: every request (see request_s) plus decode."""
    reqs = sum(request_s(plan.bus, b) for b in plan.blocks)
    return reqs + len(plan.point_index) * DECODE_PER_POINT_S


def worst_cycle_s(plan: BusPlan) -> float:
    """Time of one cycle when no device answers: every request waits out all its attempts."""
    return len(plan.blocks) * plan.bus.timeout * (plan.bus.retries + 1)


def format_plan(plans: Sequence[BusPlan], points: Sequence[PointSpec]) -> str:
    """The poll plan as `dust-agent check` prints it."""
    by_index = {p.index: p for p in points}
    out: list[str] = []
    for plan in plans:
        out.extend(_format_bus(plan, by_index))
        out.append("")
    n_req = sum(len(p.blocks) for p in plans)
    n_reg = sum(p.buffer_size for p in plans)
    n_pts = sum(len(p.point_index) for p in plans)
    out.append(f"total: {len(plans)} buses, {n_req} requests, {n_reg} registers, {n_pts} points")
    return "\n".join(out)


def _format_bus(plan: BusPlan, by_index: dict[int, PointSpec]) -> list[str]:
    bus = plan.bus
    lines = [
        f"bus {bus.name!r}: {driver(bus.type).endpoint(bus)}, "
        f"poll every {bus.poll_interval:g} s, timeout {bus.timeout:g} s, retries {bus.retries}"
    ]
    if not plan.blocks:
        lines.append("  (no points on this bus)")
        return lines
    for b, blk in enumerate(plan.blocks):
        idx = plan.point_index[plan.point_block == b]
        keys = ", ".join(f"{by_index[int(i)].device}.{by_index[int(i)].key}" for i in idx)
        head = (
            f"  [{b + 1}] unit {blk.unit_id:<3} {blk.table:<7} "
            f"{blk.address:>5}-{blk.address + blk.count - 1:<5} {blk.count:>3} regs  "
        )
        lines.append(head + f"{len(idx)} points:")
        lines.extend(
            textwrap.wrap(keys, width=96, initial_indent=" " * 6, subsequent_indent=" " * 6)
        )
    est = estimate_cycle_s(plan)
    lines.append(
        f"  per cycle: {len(plan.blocks)} requests, {plan.buffer_size} registers, "
        f"{len(plan.point_index)} points"
    )
    how = driver(bus.type).basis(bus)
    lines.append(
        f"  estimated cycle time: ~{est * 1000:.0f} ms ({len(plan.blocks)} requests; {how})"
    )
    lines.append(
        f"  worst case if no device answers: {worst_cycle_s(plan):g} s "
        f"(timeout x (retries + 1) per request)"
    )
    if est > bus.poll_interval:
        lines.append(
            f"  WARNING: poll_interval {bus.poll_interval:g} s is shorter than the line can "
            f"carry (~{est:.3g} s a cycle): cycles will overrun; raise poll_interval, "
            "raise the baud or split the devices over more lines"
        )
    return lines


def _device_key(p: PointSpec) -> str:
    """ "device.key": the point's code object when that is its code (the default), so the
    plan holds no second copy of the string."""
    key = f"{p.device}.{p.key}"
    return p.code if p.code == key else key
