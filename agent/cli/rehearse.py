"""`dust-agent platform-rehearse`'s arguments; the receiver (agent.uplink.platforms.receiver,
with http.server and cryptography) is imported only when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="take keys, codes and mapping from this agent config")
    p.add_argument("--platform", help="the [[platforms]] entry's name (default: the only one)")
    p.add_argument("--profile", choices=("hebei_v1_1", "mem"), help="without a config")
    p.add_argument("--key-file", type=Path, help="without a config: the key (DES 8, SM4 16)")
    p.add_argument("--iv-file", type=Path, help="without a config: the IV (default: the key)")
    p.add_argument("--appid-file", type=Path, help="without a config, mem: the appid")
    p.add_argument("--appsecret-file", type=Path, help="without a config, mem: the appsecret")
    p.add_argument("--enterprise", default="", help="without a config: the expected qybm")
    p.add_argument("--gateway", default="", help="without a config: the expected wgbm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8808)
    p.add_argument(
        "--answer-code", type=int, default=200, help="answer this code to valid requests"
    )


def cmd_rehearse(args: argparse.Namespace) -> int:
    from agent.uplink.platforms.receiver import cmd_rehearse as run

    return run(args)
