"""`dust-sim serve --config SITE.toml`: serve every device of an agent config until stopped.

Prints one JSON line on stdout first (flushed) saying where each bus is served, e.g.
`{"dust_sim": "serving", "buses": {"plant": {"type": "tcp", "host": "127.0.0.1", "port":
40123}}, "devices": 2, "points": 16, ...}`; with `--agent-config OUT` it also writes the site
config rewritten to those addresses, ready for `dust-agent run -c OUT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson

from firmware_sim.harness import dump_toml
from firmware_sim.scenario_file import Scenario, load_scenario
from firmware_sim.site import SiteModel
from firmware_sim.site_serve import Bind, SiteServer
from firmware_sim.timeline import ScenarioError, Timeline


def add_site_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--config",
        metavar="SITE.toml",
        default=None,
        help="serve every device of this agent config (each register as the config declares it)",
    )
    serve.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="BUS=HOST:PORT|BUS=/dev/tty",
        help="with --config: serve this bus here instead of the config's address (repeatable)",
    )
    serve.add_argument(
        "--local",
        action="store_true",
        help="with --config: every TCP bus on 127.0.0.1 at a free port, every RTU bus on a "
        "new socat pty pair; the JSON line says where",
    )
    serve.add_argument(
        "--agent-config",
        metavar="OUT.toml",
        default=None,
        help="with --config: write the config pointed at the served addresses here",
    )


def load_site(
    config: str, scenario: str | None, seed: int, speed: float
) -> tuple[SiteModel, Scenario | None]:
    """The model of a site config with an optional scenario (file or shipped name)."""
    from agent.config import load_config

    chosen = load_scenario(scenario) if scenario and scenario != "none" else None
    cfg = load_config(config)
    timeline = chosen.timeline if chosen is not None else Timeline()
    return SiteModel(cfg, timeline, seed=seed, speed=speed), chosen


def started_line(server: SiteServer, chosen: Scenario | None) -> dict[str, object]:
    model = server.model
    return {
        "dust_sim": "serving",
        "config": str(model.cfg.path),
        "buses": server.served,
        "devices": len(model.device_unit),
        "points": len(model.cfg.points),
        "scenario": chosen.name if chosen is not None else None,
        "speed": model.speed,
    }


async def serve_demo_site(args: argparse.Namespace) -> int:
    """`dust-sim serve --scenario NAME` (no --config): the scenario file on the demo site
    (DC-1, DC-2 dry, WC-3 wet; units 1, 2, 3) over Modbus TCP on --host/--port."""
    from firmware_sim.run_scenario import DEMO_SITE

    try:
        model, chosen = load_site(str(DEMO_SITE), args.scenario, args.seed, args.speed)
    except (ScenarioError, ValueError) as exc:
        print(f"dust-sim: {exc}", file=sys.stderr)
        return 2
    bus = model.cfg.buses[0].name
    for unit, fault in args.fault:
        model.unit_faults[(bus, unit)] = fault
    server = SiteServer(model, {bus: Bind(args.host, args.port)})
    try:
        await server.start()
    except OSError as exc:
        print(f"dust-sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    where = server.served[bus]
    units = ",".join(str(u) for u in model.unit_ids(bus))
    assert chosen is not None
    about = " ".join(chosen.description.split())
    speed = "" if args.speed == 1.0 else f", speed x{args.speed:g}"
    print(
        f"dust-sim: serving demo site (units {units}) on {where['host']}:{where['port']}; "
        f"scenario {chosen.name}: {about}{speed}",
        flush=True,
    )
    return await _until_signalled(server)


async def _until_signalled(server: SiteServer) -> int:
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


async def serve_site(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    try:
        binds = dict(Bind.parse(b) for b in args.bind)
        model, chosen = load_site(args.config, args.scenario, args.seed, args.speed)
        capture = getattr(args, "capture", None)
        if capture is not None:
            from firmware_sim.replay import apply_capture, load_capture

            apply_capture(model, load_capture(Path(capture)), loop=args.loop)
        server = SiteServer(model, binds, local=args.local)
    except (ConfigError, ScenarioError, ValueError, OSError) as exc:
        print(f"dust-sim: {exc}", file=sys.stderr)
        return 2
    try:
        await server.start()
    except OSError as exc:
        print(f"dust-sim: cannot serve: {exc} (use --local or --bind)", file=sys.stderr)
        return 1
    try:
        if args.agent_config:
            text = dump_toml(server.agent_config())
            await asyncio.to_thread(Path(args.agent_config).write_text, text)
        print(orjson.dumps(started_line(server, chosen)).decode(), flush=True)
    except BaseException:
        await server.stop()
        raise
    return await _until_signalled(server)
