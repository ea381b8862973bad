"""Read-plan compilation: block merging, limits, buffer layout, and the printed plan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.model import BusSpec, DataType, PointSpec
from agent.source.plan import BusPlan, compile_plan, estimate_cycle_s, format_plan
from drivers.base import MAX_REGISTERS_PER_READ, Block, Table
from tests.factories import point

BUS = BusSpec("line1", "tcp", "10.0.0.5", 502, timeout=0.5, retries=1, poll_interval=1.0)


def pt(
    index: int,
    address: int,
    type: DataType = "uint16",
    *,
    unit: int = 1,
    table: Table = "holding",
    bus: str = "line1",
) -> PointSpec:
    return point(
        index, device=f"dc{unit}", code=f"C{index}", bus=bus, unit_id=unit, table=table,
        address=address, type=type, kind="",
    )  # fmt: skip


def blocks_of(points: list[PointSpec], max_gap: int = 4) -> tuple[Block, ...]:
    (plan,) = compile_plan(points, [BUS], max_gap)
    return plan.blocks


def test_adjacent_registers_merge() -> None:
    pts = [pt(0, 10), pt(1, 11, "float32"), pt(2, 13)]
    assert blocks_of(pts) == (Block(1, "holding", 10, 4),)


def test_gap_up_to_max_gap_is_filled() -> None:
    assert blocks_of([pt(0, 0), pt(1, 5)]) == (Block(1, "holding", 0, 6),)  # 4 unused: 1..4


def test_gap_beyond_max_gap_splits() -> None:
    assert blocks_of([pt(0, 0), pt(1, 6)]) == (
        Block(1, "holding", 0, 1),
        Block(1, "holding", 6, 1),
    )
    assert blocks_of([pt(0, 0), pt(1, 2)], max_gap=0) == (
        Block(1, "holding", 0, 1),
        Block(1, "holding", 2, 1),
    )


def test_block_cap_never_splits_a_point() -> None:
    pts = [pt(i, i) for i in range(124)] + [pt(124, 124, "float32"), pt(125, 126)]
    assert blocks_of(pts) == (Block(1, "holding", 0, 124), Block(1, "holding", 124, 3))
    many = [pt(i, i) for i in range(300)]
    assert [b.count for b in blocks_of(many)] == [125, 125, 50]


def test_units_and_tables_are_separate_requests() -> None:
    pts = [pt(0, 0, unit=2), pt(1, 0, table="input"), pt(2, 0), pt(3, 1, unit=2)]
    assert blocks_of(pts) == (
        Block(1, "holding", 0, 1),
        Block(1, "input", 0, 1),
        Block(2, "holding", 0, 2),
    )


def test_buffer_layout_and_frame_order() -> None:
    pts = [pt(0, 50, unit=2), pt(1, 0, "float32"), pt(2, 100), pt(3, 2)]
    (plan,) = compile_plan(pts, [BUS])
    assert plan.blocks == (
        Block(1, "holding", 0, 3),
        Block(1, "holding", 100, 1),
        Block(2, "holding", 50, 1),
    )
    assert plan.block_offsets == (0, 3, 4)
    assert plan.buffer_size == 5
    assert plan.point_index.tolist() == [0, 1, 2, 3]
    assert plan.point_block.tolist() == [2, 0, 1, 0]
    assert plan.point_keys == ("dc2.p0", "dc1.p1", "dc1.p2", "dc1.p3")
    assert plan.block_points(0) == ("dc1.p1", "dc1.p3")
    assert not plan.point_index.flags.writeable


def test_overlapping_points_do_not_crash() -> None:
    pts = [pt(0, 10, "float32"), pt(1, 11), pt(2, 10, "int32")]
    (plan,) = compile_plan(pts, [BUS])
    assert plan.blocks == (Block(1, "holding", 10, 2),)
    buf = np.array([0, 7], dtype=np.uint16)
    assert plan.decoder.decode(buf).tolist() == pytest.approx([9.8e-45, 7.0, 7.0], abs=1e-44)


def test_buses_split_and_empty_bus_kept() -> None:
    other = BusSpec("line2", "tcp", "10.0.0.6", 502, 0.5, 0, 2.0)
    spare = BusSpec("spare", "tcp", "10.0.0.7", 502, 0.5, 0, 2.0)
    pts = [pt(0, 0), pt(1, 0, bus="line2"), pt(2, 1)]
    plans = compile_plan(pts, [BUS, other, spare])
    assert [p.bus.name for p in plans] == ["line1", "line2", "spare"]
    assert [p.point_index.tolist() for p in plans] == [[0, 2], [1], []]
    assert plans[2].blocks == () and plans[2].buffer_size == 0


def test_unknown_bus_and_bad_gap_rejected() -> None:
    with pytest.raises(ValueError, match="unknown bus"):
        compile_plan([pt(0, 0, bus="nope")], [BUS])
    with pytest.raises(ValueError, match="max_gap"):
        compile_plan([], [BUS], max_gap=-1)


def memory_value(unit: int, table: str, address: int) -> int:
    return (address * 7 + unit * 1000 + (500 if table == "input" else 0)) & 0xFFFF


def fill_buffer(plan: BusPlan) -> np.ndarray:
    buf = np.zeros(plan.buffer_size, dtype=np.uint16)
    for blk, off in zip(plan.blocks, plan.block_offsets, strict=True):
        for i in range(blk.count):
            buf[off + i] = memory_value(blk.unit_id, blk.table, blk.address + i)
    return buf


@given(
    slots=st.sets(
        st.tuples(st.integers(1, 3), st.sampled_from(["holding", "input"]), st.integers(0, 400)),
        max_size=120,
    ),
    max_gap=st.integers(0, 10),
)
def test_plan_properties(slots: set[tuple[int, Table, int]], max_gap: int) -> None:
    pts = [pt(i, a, unit=u, table=t) for i, (u, t, a) in enumerate(sorted(slots))]
    (plan,) = compile_plan(pts, [BUS], max_gap)
    # every block is legal and serves each of its points whole
    assert all(1 <= b.count <= MAX_REGISTERS_PER_READ for b in plan.blocks)
    for p, b in zip(pts, plan.point_block.tolist(), strict=True):
        blk = plan.blocks[b]
        assert (blk.unit_id, blk.table) == (p.unit_id, p.table)
        assert blk.address <= p.address and p.address + p.width <= blk.address + blk.count
    # consecutive blocks of a group were split for a reason
    for a, b in zip(plan.blocks, plan.blocks[1:], strict=False):
        if (a.unit_id, a.table) == (b.unit_id, b.table):
            gap = b.address - (a.address + a.count)
            merged = b.address + b.count - a.address
            assert gap > max_gap or merged > MAX_REGISTERS_PER_READ
    # the decoder reads each point's own register from the concatenated buffer
    values = plan.decoder.decode(fill_buffer(plan))
    want = [memory_value(p.unit_id, p.table, p.address) for p in pts]
    assert values.tolist() == want


def test_format_plan_lists_blocks_totals_and_estimate() -> None:
    pts = [pt(0, 0), pt(1, 1, "float32"), pt(2, 0, unit=2, table="input")]
    text = format_plan(compile_plan(pts, [BUS]), pts)
    assert "bus 'line1'" in text and "10.0.0.5:502" in text
    assert "poll every 1 s" in text and "timeout 0.5 s" in text and "retries 1" in text
    assert "dc1.p0, dc1.p1" in text and "dc2.p2" in text
    assert "0-2" in text and "input" in text
    assert "estimate" in text
    assert "total: 1 buses, 2 requests, 4 registers, 3 points" in text
    assert "WARNING" not in text


def test_format_plan_warns_when_cycle_exceeds_interval() -> None:
    fast = BusSpec("fast", "tcp", "10.0.0.5", 502, 0.5, 0, poll_interval=0.01)
    pts = [pt(i, i * 10, bus="fast") for i in range(10)]
    text = format_plan(compile_plan(pts, [fast]), pts)
    assert "WARNING: poll_interval 0.01 s is shorter than the line can carry" in text


def test_rtu_estimate_from_wire_time() -> None:
    # 9600 8N1: 10 bits a character, 1.0417 ms; 3.5 characters = 3.646 ms.
    bus = BusSpec("line", "rtu", "", 0, 0.5, 0, 1.0, serial_port="/dev/ttyUSB0", baud=9600)
    pts = [pt(i, 0, unit=u, bus="line") for i, u in enumerate(range(1, 9))]
    (plan,) = compile_plan(pts, [bus])
    per_req = (8 + 7) * 10 / 9600 + 2 * 3.5 * 10 / 9600  # request + reply of one register
    assert estimate_cycle_s(plan) == pytest.approx(8 * per_req, rel=0.01)
    slow = BusSpec("line", "rtu", "", 0, 0.5, 0, 0.1, serial_port="/dev/ttyUSB0", baud=9600)
    text = format_plan(compile_plan(pts, [slow]), pts)
    assert "modbus rtu /dev/ttyUSB0 9600 baud 8N1" in text
    assert "wire time at 9600 baud" in text
    assert "WARNING: poll_interval 0.1 s is shorter than the line can carry" in text


def test_declared_holes_are_never_spanned() -> None:
    pts = [dataclasses.replace(pt(i, a), holes=(9,)) for i, a in enumerate((7, 8, 10, 11))]
    assert blocks_of(pts) == (Block(1, "holding", 7, 2), Block(1, "holding", 10, 2))
    assert blocks_of([pt(i, a) for i, a in enumerate((7, 8, 10, 11))]) == (
        Block(1, "holding", 7, 5),
    )


def test_tcp_estimate_uses_a_per_request_round_trip() -> None:
    """20 devices of one block each on one Modbus TCP endpoint polled every 50 ms: requests are
    sequential, ~1 ms each by default, so no overrun warning; a bus that sets a slower
    round_trip (a gateway) gets one."""
    bus = BusSpec("gw", "tcp", "10.0.0.5", 502, 0.5, 0, poll_interval=0.05)
    pts = [pt(i, 0, unit=u, bus="gw", table="input") for i, u in enumerate(range(1, 21))]
    (plan,) = compile_plan(pts, [bus])
    assert estimate_cycle_s(plan) == pytest.approx(20 * 0.001, rel=0.01)
    text = format_plan([plan], pts)
    assert "WARNING" not in text and "1 ms round trip per request (default" in text
    slow = dataclasses.replace(bus, round_trip=0.004)
    text = format_plan(compile_plan(pts, [slow]), pts)
    assert "4 ms round trip per request (round_trip)" in text
    assert "WARNING: poll_interval 0.05 s is shorter than the line can carry" in text
