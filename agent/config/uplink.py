"""The [uplink] and [storage] sections: TLS files, secrets, batching, drain rate, storage cap."""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path

import msgspec

from agent.config.errors import ConfigError
from agent.config.schema import RawStorage, RawUplink
from agent.config.secrets import SecretError, resolve
from agent.core.backoff import ReconnectPolicy, key_phase, slot_phase
from agent.core.hosts import host_problem
from agent.core.model import (
    BusSpec,
    Credentials,
    PointSpec,
    SiteSpec,
    StorageSpec,
    TlsSpec,
    UplinkSpec,
)

CAP_DAYS = 7  # the default storage cap holds this many days of telemetry at the poll rate
ROW_OVERHEAD = 80  # bytes per stored chunk (SQLite row, index entry, JSON framing)
RECORD_OVERHEAD = 40  # bytes per record besides its strings (ts, value, quality, separators)
MIN_CAP = 64 * 1024 * 1024
FS_SHARE = 0.5  # the default cap takes at most this share of the filesystem holding storage.dir
MIB = 1024 * 1024


def _path(value: str | msgspec.UnsetType, base: Path) -> Path | None:
    if isinstance(value, msgspec.UnsetType):
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _opt(value: str | msgspec.UnsetType) -> str | None:
    return None if isinstance(value, msgspec.UnsetType) else value


def _tls(up: RawUplink, cfg_file: Path) -> TlsSpec | None:
    base = cfg_file.parent
    files = {
        "ca_file": _path(up.ca_file, base),
        "cert_file": _path(up.cert_file, base),
        "key_file": _path(up.key_file, base),
    }
    for key, path in files.items():
        if path is not None and not path.is_file():
            raise ConfigError(cfg_file, f"uplink.{key}", f"file {path} does not exist")
    if (files["key_file"] is None) != (files["cert_file"] is None):
        key = "key_file" if files["key_file"] is None else "cert_file"
        raise ConfigError(
            cfg_file, f"uplink.{key}", "a client certificate needs both cert_file and key_file"
        )
    enabled = any(files.values()) if isinstance(up.tls, msgspec.UnsetType) else up.tls
    if not enabled:
        if any(files.values()):
            raise ConfigError(cfg_file, "uplink.tls", "tls = false but TLS files are set")
        return None
    spec = TlsSpec(files["ca_file"], files["cert_file"], files["key_file"])
    _check_tls_files(spec, cfg_file)
    return spec


def _check_tls_files(tls: TlsSpec, cfg_file: Path) -> None:
    """Load the files once, so that a bad certificate is a config error, not a retry loop."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            cfg_file, "uplink.ca_file", f"{tls.ca_file} is not a usable CA file (PEM): {exc}"
        ) from None
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                cfg_file,
                "uplink.cert_file",
                f"cannot load client certificate {tls.cert_file} with key {tls.key_file}: {exc}",
            ) from None


def _credentials(up: RawUplink, cfg_file: Path) -> Credentials | None:
    values: dict[str, str | None] = {}
    for name in ("username", "password"):
        file = _path(getattr(up, f"{name}_file"), cfg_file.parent)
        cred = _opt(getattr(up, f"{name}_credential"))
        key = f"uplink.{name}_file" if file is not None else f"uplink.{name}_credential"
        try:
            values[name] = resolve(file, cred)
        except SecretError as exc:
            raise ConfigError(cfg_file, key, str(exc)) from None
    user, password = values["username"], values["password"]
    if user is None and password is None:
        return None
    if user is None:
        raise ConfigError(cfg_file, "uplink.username_file", "a password needs a username too")
    return Credentials(user, password or "")


def _reconnect(up: RawUplink, client_id: str, cfg_file: Path) -> ReconnectPolicy:
    checks = [
        ("reconnect_initial", 0 < up.reconnect_initial <= 60, "must be above 0 and at most 60 s"),
        ("reconnect_cap", up.reconnect_initial <= up.reconnect_cap <= 300,
         "must be at least reconnect_initial and at most 300 s"),
        ("reconnect_jitter", 0 <= up.reconnect_jitter <= 600, "must be 0 to 600 s"),
        ("reconnect_refused", 1 <= up.reconnect_refused <= 3600, "must be 1 to 3600 s"),
        ("reconnect_slot", isinstance(up.reconnect_slot, msgspec.UnsetType)
         or up.reconnect_slot >= 0, "must be 0 or more"),
    ]  # fmt: skip
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(cfg_file, f"uplink.{key}", f"{getattr(up, key)}: {what}")
    return ReconnectPolicy(
        initial=up.reconnect_initial,
        cap=up.reconnect_cap,
        jitter=up.reconnect_jitter,
        refused=up.reconnect_refused,
        phase=(
            key_phase(client_id)
            if isinstance(up.reconnect_slot, msgspec.UnsetType)
            else slot_phase(up.reconnect_slot)
        ),
    )


def uplink_spec(
    up: RawUplink, site: SiteSpec, cfg_file: Path, *, secrets: bool = True
) -> UplinkSpec:
    checks = [
        ("port", 1 <= up.port <= 65535, "must be between 1 and 65535"),
        ("max_records_per_message", up.max_records_per_message >= 1, "must be at least 1"),
        ("max_bytes_per_message", up.max_bytes_per_message >= 1024, "must be at least 1024"),
        ("max_inflight", 1 <= up.max_inflight <= 100, "must be between 1 and 100"),
        ("backlog_records_per_s", up.backlog_records_per_s >= 0, "must be 0 (no limit) or more"),
        ("keepalive", 5 <= up.keepalive <= 3600, "must be between 5 and 3600 seconds"),
        ("publish_timeout", 0 < up.publish_timeout <= 300, "must be above 0 and at most 300 s"),
        ("health_interval", up.health_interval >= 0, "must be 0 (off) or more seconds"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(cfg_file, f"uplink.{key}", f"{getattr(up, key)}: {what}")
    problem = host_problem(up.host, tls_hint=True)
    if problem is not None:
        raise ConfigError(cfg_file, "uplink.host", problem)
    client_id = _opt(up.client_id) or f"dust-agent-{site.gateway_id}"
    return UplinkSpec(
        host=up.host,
        port=up.port,
        topic_prefix=up.topic_prefix.strip("/"),
        client_id=client_id,
        keepalive=up.keepalive,
        publish_timeout=up.publish_timeout,
        max_records_per_message=up.max_records_per_message,
        max_bytes_per_message=up.max_bytes_per_message,
        max_inflight=up.max_inflight,
        backlog_rate=up.backlog_records_per_s,
        health_interval=up.health_interval,
        tls=_tls(up, cfg_file),
        credentials=_credentials(up, cfg_file) if secrets else None,  # None: not read
        reconnect=_reconnect(up, client_id, cfg_file),
    )


def default_cap_bytes(points: Sequence[PointSpec], buses: Sequence[BusSpec]) -> int:
    """Outbox bytes that hold CAP_DAYS of telemetry at the configured poll rates."""
    per_s = 0.0
    for bus in buses:
        cycle = ROW_OVERHEAD + sum(
            len(p.code.encode())
            + len(p.device.encode())
            + len(p.key.encode())
            + len(p.unit.encode())
            + RECORD_OVERHEAD
            for p in points
            if p.bus == bus.name
        )
        per_s += cycle / bus.poll_interval
    return max(MIN_CAP, int(per_s * CAP_DAYS * 86400 * 1.25))  # 25 %: free pages, index


def filesystem_bytes(directory: Path) -> int | None:
    """The size of the filesystem that holds `directory` (or will: its nearest existing
    parent); None if none can be examined."""
    for p in (directory, *directory.parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_blocks * st.f_frsize
    return None


def bounded_default_cap(
    points: Sequence[PointSpec], buses: Sequence[BusSpec], fs_bytes: int | None
) -> tuple[int, str]:
    """The default outbox cap and why: CAP_DAYS at the poll rates, at most FS_SHARE of the
    filesystem (so a fast poll rate never plans for more than the disk holds)."""
    days = default_cap_bytes(points, buses)
    basis = f"default: {CAP_DAYS} days at the poll rates = {days / MIB:.0f} MiB"
    if fs_bytes is None or days <= fs_bytes * FS_SHARE:
        return days, basis
    bound = int(fs_bytes * FS_SHARE)
    return bound, (
        f"{basis}, bounded to {FS_SHARE:.0%} of the {fs_bytes / MIB / 1024:.1f} GiB filesystem "
        "holding it; set storage.max_mb to choose"
    )


def storage_spec(
    st: RawStorage, cfg_file: Path, points: Sequence[PointSpec], buses: Sequence[BusSpec]
) -> StorageSpec:
    if isinstance(st.dir, msgspec.UnsetType):
        directory = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/dust-agent").split(":")[0])
    else:
        directory = _path(st.dir, cfg_file.parent) or cfg_file.parent
        directory = directory.resolve()
    if isinstance(st.max_mb, msgspec.UnsetType):
        max_bytes, basis = bounded_default_cap(points, buses, filesystem_bytes(directory))
    elif not 1 <= st.max_mb < 2**43:  # also refuses nan and inf
        raise ConfigError(
            cfg_file, "storage.max_mb", f"{st.max_mb}: must be at least 1 (MiB) and finite"
        )
    else:
        max_bytes, basis = int(st.max_mb * MIB), "storage.max_mb"
    if st.journal_max_mb <= 0 or st.journal_keep < 1:
        raise ConfigError(
            cfg_file, "storage", "journal_max_mb must be above 0, journal_keep at least 1"
        )
    if not (st.journal_max_mb < 2**43 and st.journal_keep < 10_000):
        raise ConfigError(
            cfg_file, "storage", "journal_max_mb and journal_keep are out of any sane range"
        )
    if not 0 < st.sync_interval <= 3600:
        raise ConfigError(cfg_file, "storage.sync_interval", "must be above 0 and at most 3600 s")
    return StorageSpec(
        dir=directory,
        max_bytes=max_bytes,
        journal_max_bytes=int(st.journal_max_mb * 1024 * 1024),
        journal_keep=st.journal_keep,
        sync_interval=st.sync_interval,
        cap_basis=basis,
    )
