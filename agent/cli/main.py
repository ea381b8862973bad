"""The `dust-agent` command: run, check, alarms."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.config import EX_CONFIG, ConfigError, load_config
from agent.core.model import AgentConfig

DEFAULT_CONFIG = os.environ.get("DUST_AGENT_CONFIG", "/etc/dust-agent/agent.toml")
log = logging.getLogger("agent")


def _setup_logging(level: str) -> None:
    # Under systemd, journald stamps each line itself: no duplicate timestamp, and a <N>
    # priority prefix per line so journalctl knows the level
    # (agent.service.systemd.JournalFormatter).
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        from agent.service.systemd import JournalFormatter

        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _load(path: str) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"dust-agent: config error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def _rule_text(p: object) -> str:
    from agent.core.model import PointSpec
    from agent.rules.describe import rule_text

    assert isinstance(p, PointSpec)
    return rule_text(p)


def cmd_check(args: argparse.Namespace) -> int:
    from agent.source.plan import compile_config_plan, format_plan

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
    for pl in cfg.platforms:
        print(
            f"platform {pl.name} ({pl.profile}) {pl.url} qybm {pl.enterprise_code} wgbm "
            f"{pl.gateway_code}: {len(pl.codes)} point(s) every {pl.period:g} s, alarms at once"
        )
    print()
    print(format_plan(compile_config_plan(cfg), cfg.points))
    print()
    print("points and alarm thresholds:")
    width = max(len(p.code) for p in cfg.points)
    for p in cfg.points:
        print(f"  {p.code:<{width}}  {p.kind:<22} {p.unit:<4} {_rule_text(p)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.supervisor import run_until_signalled

    cfg = _load(args.config)
    log.info("dust-agent %s starting with %s", __version__, cfg.path)
    try:
        return asyncio.run(run_until_signalled(cfg))
    except KeyboardInterrupt:
        return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    from agent.cli.alarms import run_alarms

    return run_alarms(_load(args.config).storage.dir / "journal", args)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli import status as status_cli
    from agent.cli.locale import cli_lang

    state_dir, warning = status_cli.state_dir_of(Path(args.config))
    if warning:
        print(f"dust-agent status: {warning}", file=sys.stderr)
    try:
        doc = status_cli.load(state_dir)
    except (OSError, ValueError) as exc:
        print(f"dust-agent status: {exc}", file=sys.stderr)
        return status_cli.EXIT_NO_STATUS
    print(status_cli.to_json(doc) if args.json else status_cli.to_table(doc, lang=cli_lang()))
    return status_cli.exit_code(doc)


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
    from agent.cli.scan import add_arguments as scan_arguments
    from agent.cli.scan import cmd_scan

    scan = sub.add_parser("scan", help="list the unit ids that answer on a bus (installers)")
    scan_arguments(scan)
    scan.set_defaults(func=cmd_scan)
    alarms = with_config(sub.add_parser("alarms", help="print the local alarm journal"))
    alarms.add_argument("--since", help="only transitions since: 30m, 2h, 7d, or an ISO date/time")
    alarms.add_argument("--active", action="store_true", help="only alarms that are still active")
    alarms.set_defaults(func=cmd_alarms)
    from agent.cli.alarms import add_arguments
    from agent.service.ack import add_operator_commands

    add_arguments(alarms)
    add_operator_commands(sub, with_config, _load)
    status = with_config(
        sub.add_parser(
            "status", help="buses, devices, alarms, outbox, uplink and clock of the agent"
        )
    )
    status.add_argument("--json", action="store_true", help="the snapshot as JSON, for scripts")
    status.set_defaults(func=cmd_status)
    from agent.cli.rehearse import add_arguments as rehearse_arguments
    from agent.cli.rehearse import cmd_rehearse

    rehearse = sub.add_parser(
        "platform-rehearse",
        help="a reference platform receiver on this box: decrypts, checks and prints uploads",
    )
    rehearse_arguments(rehearse)
    rehearse.set_defaults(func=cmd_rehearse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
