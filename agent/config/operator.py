"""The [operator] table (the local operator socket and shelving policy) and the journal's
HMAC key file of [storage]."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import msgspec

from agent.config.errors import ConfigError
from agent.config.schema import RawOperator, RawStorage
from agent.config.secrets import SecretError, read_secret
from agent.core.model import OperatorSpec, StorageSpec

SYSTEM_STATE_DIR = Path("/var/lib/dust-agent")
SYSTEM_SOCKET = Path("/run/dust-agent/operator.sock")  # the unit's RuntimeDirectory=
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_SHELVE_LIMIT = 366 * 86400.0


def default_socket(storage_dir: Path) -> Path:
    """The unit's RuntimeDirectory for the system state directory, else next to the state."""
    return SYSTEM_SOCKET if storage_dir == SYSTEM_STATE_DIR else storage_dir / "operator.sock"


def operator_spec(raw: RawOperator, storage_dir: Path, cfg_file: Path) -> OperatorSpec:
    if isinstance(raw.socket, msgspec.UnsetType):
        sock = default_socket(storage_dir)
    else:
        sock = Path(raw.socket).expanduser()
        sock = sock if sock.is_absolute() else cfg_file.parent / sock
    if len(str(sock).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(
            cfg_file, "operator.socket", f"{sock}: longer than {MAX_SOCKET_PATH} bytes"
        )
    if not math.isfinite(raw.max_shelve) or not 0 < raw.max_shelve <= MAX_SHELVE_LIMIT:
        raise ConfigError(
            cfg_file,
            "operator.max_shelve",
            f"{raw.max_shelve}: must be above 0 and at most {MAX_SHELVE_LIMIT:.0f} s (366 days)",
        )
    if not raw.group or not raw.group.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(cfg_file, "operator.group", f"'{raw.group}' is not a group name")
    return OperatorSpec(sock, raw.group, raw.max_shelve, raw.allow_shelve_critical)


def with_journal_key(
    storage: StorageSpec, raw: RawStorage, cfg_file: Path, *, secrets: bool
) -> StorageSpec:
    """`storage.journal_hmac_key_file`: the path always, the key only when `secrets`."""
    if isinstance(raw.journal_hmac_key_file, msgspec.UnsetType):
        return storage
    path = Path(raw.journal_hmac_key_file).expanduser()
    path = path if path.is_absolute() else cfg_file.parent / path
    key = None
    if secrets:
        try:
            key = read_secret(path).encode()
        except SecretError as exc:
            raise ConfigError(cfg_file, "storage.journal_hmac_key_file", str(exc)) from None
    return replace(storage, journal_hmac_key_file=path, journal_hmac_key=key)
