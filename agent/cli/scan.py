"""`dust-agent scan`: which unit ids answer on a serial line, an RTU-over-TCP or a Modbus TCP
endpoint. A unit answers if it sends data or a Modbus exception (it is there, the register may
not be), except 4, 10 and 11: a device failure, or a gateway saying it cannot reach that unit
(drivers raise SourceDeviceFailure). Read-only: one read of one holding register per unit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drivers.base import Block, SourceError, SourceLinkError, SourceProtocolError
from drivers.registry import make_source


def parse_units(text: str) -> list[int]:
    """`1-247`, `1,2,5-8` -> unit ids; ValueError with a message on a bad list."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad unit list {text!r}: use e.g. 1-247 or 1,2,5-8") from None
        if not 1 <= a <= b <= 247:
            raise ValueError(f"bad unit range {part!r}: ids are 1..247")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", help="serial port, e.g. /dev/serial/by-id/usb-FTDI_...")
    p.add_argument("--baud", type=int, default=9600, help="serial speed (default 9600)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="N")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--host", help="Modbus TCP or RTU-over-TCP address (instead of --port)")
    p.add_argument("--tcp-port", type=int, default=502, help="TCP port (default 502)")
    p.add_argument("--rtu", action="store_true", help="with --host: RTU frames over TCP")
    p.add_argument("--units", default="1-247", help="unit ids to try (default 1-247)")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.2,
        help="seconds to wait for each unit (default 0.2); on RTU a silent unit costs about "
        "twice this: the wait, then a quiet guard so a late reply cannot collide with the next "
        "request",
    )


def worst_case_s(args: argparse.Namespace, n_units: int) -> float:
    """About the longest the scan can take: every unit silent."""
    timeout: float = args.timeout
    return n_units * timeout * (1 if args.host and not args.rtu else 2)


@dataclass(frozen=True, slots=True)
class ScanBus:
    """The bus a scan reads (drivers.base.BusSettings), built from the command line."""

    type: str
    host: str = ""
    port: int = 0
    serial_port: str = ""
    baud: int | None = None
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    timeout: float = 0.2
    name: str = "scan"
    retries: int = 0
    bytesize: int = 8
    turnaround: float | None = None
    late_guard: float | None = None
    round_trip: float | None = None


def scan_bus(args: argparse.Namespace) -> ScanBus:
    """--port: an rtu serial line; --host --rtu: rtu_tcp; --host: tcp (drivers.registry)."""
    if args.port:
        return ScanBus(
            "rtu",
            serial_port=args.port,
            baud=args.baud,
            parity=args.parity,
            stopbits=args.stopbits,
            timeout=args.timeout,
        )
    kind = "rtu_tcp" if args.rtu else "tcp"
    return ScanBus(kind, host=args.host, port=args.tcp_port, timeout=args.timeout)


async def scan(args: argparse.Namespace, units: Sequence[int], found: list[int]) -> None:
    """Probe `units` in order, appending those that answer to `found` (kept on interrupt)."""
    source = make_source(scan_bus(args))
    await source.connect()
    try:
        for unit in units:
            try:
                await source.read(Block(unit, "holding", 0, 1))
            except SourceProtocolError:
                pass  # an exception reply: the unit is there
            except SourceLinkError:
                raise
            except SourceError:
                continue
            found.append(unit)
            print(f"unit {unit}: answers", flush=True)
    finally:
        await source.close()


def cmd_scan(args: argparse.Namespace) -> int:
    if bool(args.port) == bool(args.host):
        print("dust-agent scan: give --port (serial) or --host (TCP)", file=sys.stderr)
        return 2
    if args.rtu and not args.host:
        print("dust-agent scan: --rtu (RTU over TCP) goes with --host", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print("dust-agent scan: --timeout must be > 0", file=sys.stderr)
        return 2
    try:
        units = parse_units(args.units)
    except ValueError as exc:
        print(f"dust-agent scan: {exc}", file=sys.stderr)
        return 2
    where = args.port or f"{args.host}:{args.tcp_port}"
    worst = worst_case_s(args, len(units))
    print(f"scanning {len(units)} unit id(s) on {where} (at most ~{worst:.0f} s) ...", flush=True)
    found: list[int] = []
    try:
        asyncio.run(scan(args, units, found))
    except SourceLinkError as exc:
        print(f"dust-agent scan: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ids = ", ".join(map(str, found)) or "none"
        print(f"dust-agent scan: interrupted; units answering so far: {ids}", file=sys.stderr)
        return 130
    ids = ", ".join(map(str, found)) or "none"
    print(f"responding unit ids: {ids}")
    return 0
