"""The `dust-agent` command: run, check, alarms."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.config import EX_CONFIG, ConfigError, load_config
from agent.model import AgentConfig

DEFAULT_CONFIG = os.environ.get("DUST_AGENT_CONFIG", "/etc/dust-agent/agent.toml")
log = logging.getLogger("agent")


def _setup_logging(level: str) -> None:
    # Under systemd, journald stamps each line itself: no duplicate timestamp.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _load(path: str) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"dust-agent: config error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def _rule_text(p: object) -> str:
    from agent.model import PointSpec

    assert isinstance(p, PointSpec)
    r = p.rule
    if r is None:
        return "-"
    parts = []
    for name, sym in (
        ("low_alarm", "LL"),
        ("low_warning", "L"),
        ("high_warning", "H"),
        ("high_alarm", "HH"),
    ):
        v = getattr(r, name)
        if v is not None:
            parts.append(f"{sym} {v:g}")
    return (
        f"{' '.join(parts)} (hyst {r.hysteresis_pct:g}%, on {r.on_delay:g}s, off {r.off_delay:g}s)"
    )


def cmd_check(args: argparse.Namespace) -> int:
    from agent.plan import compile_config_plan, format_plan

    cfg = _load(args.config)
    print(f"config {cfg.path}: OK")
    print(
        f"site {cfg.site.enterprise_code} gateway {cfg.site.gateway_id}"
        f"{' (' + cfg.site.name + ')' if cfg.site.name else ''}; "
        f"{len(cfg.buses)} bus(es), {len({p.device for p in cfg.points})} device(s), "
        f"{len(cfg.points)} point(s)"
    )
    print(
        f"uplink mqtt://{cfg.uplink.host}:{cfg.uplink.port} topics {cfg.topic('<stream>')} "
        f"client id {cfg.uplink.client_id}"
    )
    print(f"storage {cfg.storage.dir} (outbox cap {cfg.storage.max_bytes // (1024 * 1024)} MiB)")
    print()
    print(format_plan(compile_config_plan(cfg), cfg.points))
    print()
    print("points and alarm thresholds:")
    width = max(len(p.code) for p in cfg.points)
    for p in cfg.points:
        print(f"  {p.code:<{width}}  {p.kind:<22} {p.unit:<4} {_rule_text(p)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.supervisor import run_until_signalled

    cfg = _load(args.config)
    log.info("dust-agent %s starting with %s", __version__, cfg.path)
    try:
        return asyncio.run(run_until_signalled(cfg))
    except KeyboardInterrupt:
        return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    from agent.alarms_cli import alarms_report

    cfg = _load(args.config)
    try:
        print(alarms_report(cfg.storage.dir / "journal", args.since, args.active))
    except ValueError as exc:
        print(f"dust-agent alarms: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dust-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dust-agent {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("DUST_AGENT_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
        )
        return p

    with_config(
        sub.add_parser("run", help="poll, check, store and forward until stopped")
    ).set_defaults(func=cmd_run)
    with_config(
        sub.add_parser("check", help="validate the config and print the poll plan")
    ).set_defaults(func=cmd_check)
    alarms = with_config(sub.add_parser("alarms", help="print the local alarm journal"))
    alarms.add_argument("--since", help="only transitions since: 30m, 2h, 7d, or an ISO date/time")
    alarms.add_argument("--active", action="store_true", help="only alarms that are still active")
    alarms.set_defaults(func=cmd_alarms)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
