"""`dust-sim`: the dust-collector simulator's command line.

    dust-sim serve [--host 127.0.0.1] [--port 5020] [--scenario NAME] [--speed X]
                   [--units 1,2] [--bench-devices N --bench-registers M] [--peer-devices N]
                   [--fault UNIT:SPEC ...] [--seed S]
    dust-sim demo [--seconds 90]

`serve` prints one start line on stdout (flushed; `--port 0` picks a free port and the line
shows it), then serves until SIGINT or SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from firmware_sim.peer import PEER_REGISTERS
from firmware_sim.plant import SCENARIOS, Plant
from firmware_sim.server import Fault, PlantServer, parse_fault_arg, quiet_pymodbus
from firmware_sim.site_cli import add_site_arguments, serve_demo_site, serve_site

DEFAULT_PORT = 5020


def _units(text: str) -> list[int]:
    try:
        units = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad unit list {text!r}: use e.g. 1,2") from None
    if not units or not all(1 <= u <= 247 for u in units):
        raise argparse.ArgumentTypeError(f"bad unit list {text!r}: ids must be 1..247")
    return units


def _fault(text: str) -> tuple[int, Fault]:
    try:
        return parse_fault_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dust-sim",
        description="Simulator of dust collectors and their monitoring controllers (Modbus TCP).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the demo plant (or the bench plant) over Modbus TCP",
        description=(
            "Serve dry dust collectors over Modbus TCP (input registers as in "
            "config/profiles/dry_collector.toml). Runs until SIGINT/SIGTERM. "
            "The smoulder scenario heats unit 1's hopper at 1 °C/s from t=10 s: it passes "
            "60 °C at ~32 s and 70 °C at ~42 s and levels off at ~85 °C, about 60x faster "
            "than a real smoulder."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 = a free one (default 5020)"
    )
    serve.add_argument(
        "--scenario",
        default=None,
        help="smoulder (default for the demo plant: units 1, 2 dry, 3, 4 wet), none (default "
        "for the bench plant), or a shipped scenario file's name (firmware-sim/scenarios/: "
        "served on the demo site, units 1, 2 dry and 3 wet); with --config: a scenario file "
        "or a shipped name",
    )
    serve.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        help="scenario time factor: 2 = the smoulder runs twice as fast (default 1)",
    )
    serve.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    serve.add_argument(
        "--units", type=_units, default=None, help="demo plant unit ids (default 1,2)"
    )
    serve.add_argument(
        "--bench-devices",
        type=_count,
        default=None,
        metavar="N",
        help="bench plant: units 1..N, each with --bench-registers holding registers",
    )
    serve.add_argument(
        "--bench-registers",
        type=_count,
        default=None,
        metavar="M",
        help="bench plant: M uint16 holding registers (FC3, addresses 0..M-1) per unit",
    )
    serve.add_argument(
        "--peer-devices",
        type=_count,
        default=None,
        metavar="N",
        help="peer plant (bench/peer.py): units 1..N, each with 17 holding registers carrying "
        "a per-read sequence number and the read time in ms (firmware_sim.peer)",
    )
    serve.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="UNIT:SPEC",
        help=(
            "inject a fault: 2:no_answer, 2:exception=2, 2:delay=0.5, 2:max_count=2 "
            "(longer reads get exception 3), or combined 2:delay=0.5,exception=6; "
            "RTU only: crc, garbage, every=N (repeatable)"
        ),
    )

    serve.add_argument(
        "--rtu",
        metavar="PORT",
        default=None,
        help="serve Modbus RTU on this serial port (a pty end made with socat, or a "
        "USB-RS485 adapter) instead of Modbus TCP",
    )
    serve.add_argument(
        "--rtu-tcp",
        action="store_true",
        help="serve raw RTU frames over TCP on --host/--port (a serial device server)",
    )
    serve.add_argument(
        "--baud",
        type=int,
        default=None,
        help="RTU line speed: every reply is held for its wire time at this baud "
        "(8N1; default: no hold)",
    )

    add_site_arguments(serve)

    replay = sub.add_parser(
        "replay",
        help="serve values recorded from a plant through a site config's register map",
        description=(
            "Serve a capture (JSON lines of telemetry messages as mosquitto_sub prints them, "
            "or a CSV point,time,value) through --config's register map, at --speed. Prints "
            "the same JSON start line as serve --config."
        ),
    )
    replay.add_argument("capture", metavar="CAPTURE")
    replay.add_argument("--speed", type=_positive_float, default=1.0, help="replay speed (1)")
    replay.add_argument("--loop", action="store_true", help="start over at the end")
    replay.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    replay.add_argument("--scenario", default=None, help=argparse.SUPPRESS)
    add_site_arguments(replay)

    scen = sub.add_parser(
        "run-scenario",
        help="play scenario files against the real agent and check their expectations",
        description=(
            "Start mosquitto, the simulator (serving --config, or the demo site) and dust-agent "
            "per scenario file, play each timeline and check its expectations against the "
            "alarms that reach the broker. Several files run at once. Prints a pass/fail table; "
            "exits 1 if any expectation failed. FILE is a path or a shipped scenario name."
        ),
    )
    scen.add_argument("files", nargs="+", metavar="FILE")
    scen.add_argument("--config", default=None, help="site config (default: the demo site)")
    scen.add_argument("--speed", type=_positive_float, default=1.0, help="timeline speed (1)")
    scen.add_argument("--agent-cmd", default=None, help="command to run the agent")
    scen.add_argument("--keep", action="store_true", help="keep the work dir (logs)")

    demo = sub.add_parser(
        "demo",
        help="run broker + simulator + agent and print what arrives upstream",
        description=(
            "Start mosquitto, the simulator (smoulder scenario) and dust-agent, subscribe "
            "to everything and print readings and alarms. Exits 0 if readings arrived and "
            "the hopper-temperature alarm was raised."
        ),
    )
    demo.add_argument("--seconds", type=_positive_float, default=90.0, help="run time (90)")
    demo.add_argument("--speed", type=_positive_float, default=1.0, help="scenario speed (1)")
    demo.add_argument(
        "--config-template",
        default=None,
        help="agent config to adapt (default config/agent.example.toml)",
    )
    demo.add_argument(
        "--agent-cmd",
        default=None,
        help="command to run the agent (default: dust-agent next to this python)",
    )
    demo.add_argument("--keep", action="store_true", help="keep the work dir (logs) on success")
    return parser


def describe_start(server: PlantServer, bench: bool) -> str:
    units = server.units
    if bench:
        ids = f"{units[0]}..{units[-1]}" if len(units) > 1 else str(units[0])
        plant = "peer plant" if server.peer else "bench plant"
        what = f"{plant} (units {ids}, {server.holding_registers} holding registers each)"
    else:
        what = f"demo plant (units {','.join(map(str, units))})"
    line = f"dust-sim: serving {what} on {server.host}:{server.port}; {server.plant.describe()}"
    if server.faults:
        line += "; faults " + " ".join(f"{u}:{f.describe()}" for u, f in server.faults.items())
    return line


async def serve(args: argparse.Namespace) -> int:
    if args.config is not None:
        return await serve_site(args)
    if args.scenario is not None and args.scenario not in SCENARIOS:
        if args.bench_devices is not None or args.rtu or args.rtu_tcp:
            print("dust-sim: scenario files are served over Modbus TCP only", file=sys.stderr)
            return 2
        return await serve_demo_site(args)
    if args.peer_devices is not None:
        if args.bench_devices is not None or args.bench_registers is not None or args.units:
            print("dust-sim: --peer-devices excludes --bench-* and --units", file=sys.stderr)
            return 2
        args.bench_devices, args.units = args.peer_devices, None
        args.bench_registers = PEER_REGISTERS
    bench = args.bench_devices is not None or args.bench_registers is not None
    if bench and (args.bench_devices is None or args.bench_registers is None):
        print("dust-sim: --bench-devices and --bench-registers go together", file=sys.stderr)
        return 2
    if bench and args.units is not None:
        print("dust-sim: --units does not apply to the bench plant", file=sys.stderr)
        return 2
    scenario = args.scenario or ("none" if bench else "smoulder")
    units = range(1, args.bench_devices + 1) if bench else (args.units or [1, 2])
    if bench and args.bench_devices > 247:
        print("dust-sim: --bench-devices is at most 247", file=sys.stderr)
        return 2

    quiet_pymodbus()
    plant = Plant(seed=args.seed, scenario=scenario, speed=args.speed)
    if args.rtu or args.rtu_tcp:
        from firmware_sim.rtu_cli import serve_rtu

        return await serve_rtu(args, plant, list(units))
    server = PlantServer(
        plant,
        units=units,
        holding_registers=args.bench_registers or 0,
        host=args.host,
        port=args.port,
        faults=dict(args.fault),
        peer=args.peer_devices is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        print(f"dust-sim: {exc}", file=sys.stderr)
        return 1
    try:
        print(describe_start(server, bench), flush=True)
        await stop.wait()
    finally:
        await server.stop()
    print("dust-sim: stopped", file=sys.stderr, flush=True)
    return 0


def run_scenario_command(args: argparse.Namespace) -> int:
    from agent.config import ConfigError
    from firmware_sim.run_scenario import run_scenarios
    from firmware_sim.timeline import ScenarioError

    try:
        return asyncio.run(
            run_scenarios(
                args.files,
                config=args.config,
                speed=args.speed,
                agent_cmd=args.agent_cmd,
                keep=args.keep,
            )
        )
    except (ScenarioError, ConfigError, ValueError) as exc:
        print(f"dust-sim: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return asyncio.run(serve(args))
    if args.command == "replay":
        if args.config is None:
            print("dust-sim: replay needs --config SITE.toml", file=sys.stderr)
            return 2
        return asyncio.run(serve_site(args))
    if args.command == "run-scenario":
        return run_scenario_command(args)
    from firmware_sim.demo import run_demo

    return run_demo(
        seconds=args.seconds,
        speed=args.speed,
        config_template=args.config_template,
        agent_cmd=args.agent_cmd,
        keep=args.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
