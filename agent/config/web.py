"""Builds the `[web]` table (agent.core.webspec.WebSpec) from its raw form; reads the token."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from msgspec import UNSET, UnsetType

from agent.config.errors import ConfigError
from agent.config.schema import RawDevice, RawWeb
from agent.config.secrets import SecretError, read_secret
from agent.core.webspec import WebSpec, is_loopback


def web_spec(raw: RawWeb | UnsetType, devices: Sequence[RawDevice], file: Path) -> WebSpec:
    """The page's settings; a LAN bind without a readable, private token file is an error."""
    if raw is UNSET:
        return WebSpec()
    if not 0 <= raw.port < 65536:  # 0: any free port (tests); the log line names it
        raise ConfigError(file, "web.port", f"{raw.port} is not a TCP port (0-65535)")
    if not 1 <= raw.history_hours <= 24 * 7:
        raise ConfigError(file, "web.history_hours", "must be between 1 and 168")
    if not 1.0 <= raw.history_step <= 3600.0:
        raise ConfigError(file, "web.history_step", "must be between 1 and 3600 seconds")
    token: str | None = None
    if raw.token_file is not UNSET:
        path = Path(raw.token_file)
        try:
            token = read_secret(path if path.is_absolute() else file.parent / path)
        except SecretError as exc:
            raise ConfigError(file, "web.token_file", str(exc)) from None
        if len(token) < 16:
            raise ConfigError(file, "web.token_file", "the token must be at least 16 characters")
    elif raw.enabled and not is_loopback(raw.bind):
        raise ConfigError(
            file,
            "web.bind",
            f"binding the status page to {raw.bind} (reachable from the network) needs "
            "web.token_file: a file (mode 600) holding the access token",
        )
    return WebSpec(
        enabled=raw.enabled,
        bind=raw.bind,
        port=raw.port,
        token=token,
        allow_ack=raw.allow_ack,
        history_hours=raw.history_hours,
        history_step=raw.history_step,
        device_names_zh=tuple((d.name, d.name_zh) for d in devices if d.name_zh),
    )
