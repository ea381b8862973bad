"""`dust-sim serve --rtu PORT | --rtu-tcp`: the plant over Modbus RTU until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from firmware_sim.plant import Plant
from firmware_sim.rtu import SerialSlave, TcpRtuSlave, rtu_plant


async def serve_rtu(args: argparse.Namespace, plant: Plant, units: list[int]) -> int:
    slaves = rtu_plant(
        plant,
        units,
        baud=args.baud,
        holding_registers=args.bench_registers or 0,
        faults=dict(args.fault),
    )
    server: SerialSlave | TcpRtuSlave
    try:
        if args.rtu:
            server = SerialSlave(slaves, args.rtu, args.baud)
            await server.start()
            where = f"RTU on {args.rtu}"
        else:
            server = TcpRtuSlave(slaves, args.host, args.port)
            await server.start()
            where = f"RTU over TCP on {args.host}:{server.port}"
    except OSError as exc:
        print(f"dust-sim: cannot serve RTU: {exc}", file=sys.stderr)
        return 1
    ids = ",".join(map(str, units)) if len(units) < 10 else f"{units[0]}..{units[-1]}"
    speed = f" at {args.baud} baud (replies held for their wire time)" if args.baud else ""
    faults = " ".join(f"{u}:{f.describe()}" for u, f in sorted(slaves.faults.items()))
    print(
        f"dust-sim: serving units {ids} {where}{speed}; {plant.describe()}"
        + (f"; faults {faults}" if faults else ""),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    print("dust-sim: stopped", file=sys.stderr, flush=True)
    return 0
