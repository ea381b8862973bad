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
from agent.cli.locale import Lang
from agent.config import EX_CONFIG, ConfigError, load_config
from agent.core.model import AgentConfig
from agent.core.redact import redact_url

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


def _load(path: str, *, secrets: bool = True) -> AgentConfig:
    """The config, or exit 78 with the message. Only `run` reads the secret files."""
    try:
        return load_config(path, secrets=secrets)
    except ConfigError as exc:
        print(f"dust-agent: config error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def _load_public(path: str) -> AgentConfig:
    return _load(path, secrets=False)


def _rule_text(p: object) -> str:
    from agent.core.model import PointSpec
    from agent.rules.describe import rule_text

    assert isinstance(p, PointSpec)
    return rule_text(p)


def _lang(cfg: AgentConfig) -> Lang:
    """The language of a command's human output (agent.cli.locale)."""
    from agent.cli.locale import cli_lang

    return cli_lang(configured=cfg.language)


def cmd_check(args: argparse.Namespace) -> int:
    from agent.cli.locale import translator
    from agent.source.plan import compile_config_plan, format_plan

    cfg = _load_public(args.config)  # secrets are checked when the service starts
    problems = _preflight(cfg, args.user)
    if problems is not None:
        return problems
    tr = translator(_lang(cfg))

    def _(phrase: str) -> str:
        return tr.get(phrase, phrase)

    print(f"{_('config')} {cfg.path}: {_('OK')}")
    for warning in cfg.warnings:
        print(f"WARNING: {warning}")
    print(
        f"site {cfg.site.enterprise_code} gateway {cfg.site.gateway_id}"
        f"{' (' + cfg.site.name + ')' if cfg.site.name else ''}; "
        f"{len(cfg.buses)} bus(es), {len({p.device for p in cfg.points})} device(s), "
        f"{len(cfg.points)} point(s)"
    )
    scheme = "mqtts" if cfg.uplink.tls is not None else "mqtt"
    print(
        f"uplink {scheme}://{cfg.uplink.host}:{cfg.uplink.port} topics {cfg.topic('<stream>')} "
        f"client id {cfg.uplink.client_id}"
    )
    print(
        f"storage {cfg.storage.dir} (outbox cap {cfg.storage.max_bytes // (1024 * 1024)} MiB; "
        f"{cfg.storage.cap_basis})"
    )
    for pl in cfg.platforms:
        print(
            f"platform {pl.name} ({pl.profile}) {redact_url(pl.url)} qybm {pl.enterprise_code} "
            f"wgbm {pl.gateway_code}: {len(pl.codes)} point(s) every {pl.period:g} s, "
            "alarms at once"
        )
    print()
    print(format_plan(compile_config_plan(cfg), cfg.points))
    print()
    print(f"{_('points and alarm thresholds')}:")
    width = max(len(p.code) for p in cfg.points)
    for p in cfg.points:
        print(f"  {p.code:<{width}}  {p.kind:<22} {p.unit:<4} {_rule_text(p)}")
    written = [p for p in cfg.points if p.written_address]
    if written:
        print()
        print(f"{_('addresses as written (addressing) and as read')}:")
        for p in written:
            print(f"  {p.code:<{width}}  {p.written_address} -> {p.table} {p.address}")
    return 0


def _preflight(cfg: AgentConfig, user: str | None) -> int | None:
    """`check`'s look at the box: warnings printed; None, or the exit code of a failure."""
    from agent.cli import preflight

    try:
        account = preflight.service_account(user)
    except KeyError:
        print(f"dust-agent: --user {user}: no such user", file=sys.stderr)
        return EX_CONFIG
    warnings = [*cfg.warnings, *preflight.serial_port_warnings(_serial_ports(cfg))]
    warnings += preflight.cap_warnings(cfg)
    if account is None and user is None and os.geteuid() == 0:
        warnings.append(
            f"user {preflight.SERVICE_USER} does not exist (yet): the storage directory is "
            "checked for root; give --user NAME for the unit's User="
        )
    for w in warnings:
        print(f"dust-agent: warning: {w}", file=sys.stderr)
    problem = preflight.storage_problem(cfg.storage.dir, account)
    if problem is not None and problem.fatal:
        print(f"dust-agent: {problem.text}", file=sys.stderr)
        return preflight.EX_CANTCREAT
    if problem is not None:
        print(f"dust-agent: warning: {problem.text}", file=sys.stderr)
    return None


def _serial_ports(cfg: AgentConfig) -> list[tuple[str, str]]:
    """(where, device path) of each serial bus, `where` as "file: buses[i].port"."""
    import tomllib

    raw = tomllib.loads(cfg.path.read_text(encoding="utf-8")).get("buses", [])
    at = {b.get("name"): i for i, b in enumerate(raw) if isinstance(b, dict)}
    return [
        (f"{cfg.path}: buses[{at.get(b.name, '?')}].port", b.serial_port)
        for b in cfg.buses
        if b.serial_port
    ]


def cmd_run(args: argparse.Namespace) -> int:
    from agent.cli.preflight import EX_CANTCREAT, storage_problem
    from agent.service.supervisor import run_until_signalled

    cfg = _load(args.config)
    for w in cfg.warnings:
        log.warning("%s", w)
    problem = storage_problem(cfg.storage.dir, None)
    if problem is not None and problem.fatal:  # 73: RestartPreventExitStatus, no 5 s loop
        log.error("%s", problem.text)
        return EX_CANTCREAT
    if problem is not None:  # a disk fault: the agent polls on and reports storage_error
        log.warning("%s", problem.text)
    log.info("dust-agent %s starting with %s", __version__, cfg.path)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    try:
        return asyncio.run(run_until_signalled(cfg))
    except KeyboardInterrupt:
        return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    from agent.cli.alarms import run_alarms

    cfg = _load_public(args.config)
    return run_alarms(cfg.storage, args, _lang(cfg))


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli import status as status_cli
    from agent.cli.locale import cli_lang, configured_language

    state_dir, warning = status_cli.state_dir_of(Path(args.config))
    if warning:
        print(f"dust-agent status: {warning}", file=sys.stderr)
    try:
        doc = status_cli.load(state_dir)
    except (OSError, ValueError) as exc:
        print(f"dust-agent status: {exc}", file=sys.stderr)
        return status_cli.EXIT_NO_STATUS
    lang = cli_lang(configured=configured_language(Path(args.config)))
    print(status_cli.to_json(doc) if args.json else status_cli.to_table(doc, lang=lang))
    return status_cli.exit_code(doc)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; for `command="run"` only `run`, so that the service starts
    without importing the other commands' modules (start-up time and memory)."""
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
    if command == "run":
        return parser
    check = with_config(sub.add_parser("check", help="validate the config and print the poll plan"))
    check.add_argument(
        "--user",
        help="check that this user can write the storage directory (default as root: "
        "dust-agent when that user exists, the service's User=; else the caller)",
    )
    check.set_defaults(func=cmd_check)
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
    from agent.cli.operator import add_operator_commands

    add_arguments(alarms)
    add_operator_commands(sub, with_config, _load_public)
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


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a reader that went away (`| head`) means to a shell


def _command(argv: Sequence[str]) -> str | None:
    """The command word of `argv` (after the global options), or None."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif not word.startswith("--log-level="):
            return None  # --help, --version, or a mistake: the whole parser answers
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_command(argv)).parse_args(argv)
        _setup_logging(args.log_level)
        result: int = args.func(args)
        sys.stdout.flush()
        return result
    except BrokenPipeError:
        # The reader closed the pipe (`dust-agent check | head`): stop quietly; point stdout
        # at /dev/null so that the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
