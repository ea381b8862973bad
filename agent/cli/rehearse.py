"""`dust-agent platform-rehearse`: the reference platform receiver on this box
(agent.uplink.platforms.receiver), with the agent's config or stand-alone."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from agent.core.platformspec import PlatformSpec

# the receiver's fault modes (agent.uplink.platforms.receiver.FAULTS; a test keeps the two
# equal): the receiver, http.server and cryptography are imported only when the command runs
FAULT_MODES = ("http500", "code401", "hang", "nonjson")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="take keys, codes and mapping from this agent config")
    p.add_argument("--platform", help="the [[platforms]] entry's name (default: the only one)")
    p.add_argument("--profile", choices=("hebei_v1_1", "mem"), help="without a config")
    p.add_argument("--key-file", type=Path, help="without a config: the key (DES 8, SM4 16)")
    p.add_argument(
        "--iv-file",
        type=Path,
        help="without a config: the IV (hebei_v1_1: required; mem: default the key)",
    )
    p.add_argument("--appid-file", type=Path, help="without a config, mem: the appid")
    p.add_argument("--appsecret-file", type=Path, help="without a config, mem: the appsecret")
    p.add_argument("--enterprise", default="", help="without a config: the expected qybm")
    p.add_argument("--gateway", default="", help="without a config: the expected wgbm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8808)
    p.add_argument(
        "--answer-code", type=int, default=200, help="answer this code to valid requests"
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=FAULT_MODES,
        help="fail the next request this way (repeatable: one request per --fault, in order)",
    )


def spec_from_args(args: argparse.Namespace) -> PlatformSpec:
    """The spec the receiver checks against; SystemExit(2) with a message when incomplete."""
    from agent.uplink.platforms import hebei, mem

    if args.config:
        from agent.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise SystemExit(f"dust-agent platform-rehearse: config error: {exc}") from None
        found = [p for p in cfg.platforms if args.platform in (None, p.name)]
        if len(found) != 1:
            names = ", ".join(p.name for p in cfg.platforms) or "none"
            raise SystemExit(
                f"dust-agent platform-rehearse: name one platform with --platform ({names})"
            )
        return found[0]
    if not args.profile or not args.key_file:
        raise SystemExit(
            "dust-agent platform-rehearse: give -c CONFIG, or --profile and --key-file"
        )
    if args.profile == "hebei_v1_1" and not args.iv_file:
        raise SystemExit("dust-agent platform-rehearse: hebei_v1_1 needs --iv-file (the IV)")
    from agent.config.secrets import SecretError, read_secret
    from agent.uplink.platforms.crypto import DES_BYTES, SM4_BYTES, parse_key

    size = DES_BYTES if args.profile == "hebei_v1_1" else SM4_BYTES
    try:
        key = parse_key(read_secret(args.key_file), size, "the key")
        iv = parse_key(read_secret(args.iv_file), size, "the IV") if args.iv_file else key
        appid = read_secret(args.appid_file) if args.appid_file else ""
        secret = read_secret(args.appsecret_file) if args.appsecret_file else ""
    except (SecretError, ValueError) as exc:
        raise SystemExit(f"dust-agent platform-rehearse: {exc}") from None
    hebei_profile = args.profile == "hebei_v1_1"
    return PlatformSpec(
        name=args.profile,
        profile=args.profile,
        url="",
        enterprise_code=args.enterprise,
        gateway_code=args.gateway,
        key=key,
        iv=iv,
        telemetry=hebei.RTS if hebei_profile else mem.EXAMPLE_TELEMETRY,
        alarm=hebei.EVENTS if hebei_profile else mem.EXAMPLE_ALARM,
        codes=frozenset(),
        decimals={},
        appid=appid,
        appsecret=secret,
        hex_upper=hebei_profile,
    )


def cmd_rehearse(args: argparse.Namespace) -> int:
    from agent.uplink.platforms.receiver import Receiver

    spec = spec_from_args(args)
    rec = Receiver(spec, args.host, args.port, answer_code=args.answer_code)
    rec.log = lambda line: print(line, flush=True)
    rec.inject(*args.fault)
    try:
        rec.start()
    except OSError as exc:
        print(f"dust-agent platform-rehearse: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    print(
        f"rehearsal receiver for {spec.profile} ({spec.name}) listening on {rec.url}; point the "
        f"platform's url at it; answering code {args.answer_code}",
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    rec.stop()
    print(f"{len(rec.received)} request(s) accepted, {len(rec.refused)} refused", file=sys.stderr)
    return 0
