"""The validated `[web]` table: the local status page's bind, token and history settings."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class WebSpec:
    """The status page. A non-loopback `bind` always has a `token` (checked by the loader)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)  # from `token_file` (mode 600)
    allow_ack: bool = False  # acknowledge / shelve from the page (the CLI's operator path)
    history_hours: int = 24  # trend history kept on disk, at `history_step` resolution
    history_step: float = 60.0  # seconds per min/max/last bucket
    # Each device's Chinese name ([[devices]] name_zh), for the page; (device, name_zh) pairs.
    device_names_zh: tuple[tuple[str, str], ...] = ()
