"""Core types shared by every stage: the validated config, frames, alarm events."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.core.backoff import ReconnectPolicy
from agent.core.platformspec import PlatformSpec
from agent.core.rulespec import NO_RULES, PointRules
from agent.core.webspec import WebSpec

DataType = Literal["uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DATA_TYPES: tuple[DataType, ...] = (
    "uint16",
    "int16",
    "uint32",
    "int32",
    "float32",
    "uint64",
    "int64",
    "float64",
)
WORD_ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
REGISTER_WIDTH: dict[DataType, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "uint64": 4,
    "int64": 4,
    "float64": 4,
}
BusType = str  # a registered driver's name (drivers.registry): "tcp", "rtu", "rtu_tcp", ...
Table = Literal["holding", "input", "coil", "discrete"]  # the four Modbus data tables
ReadMode = Literal["block", "point"]


class Quality(enum.IntFlag):
    """Per-reading quality bits, sent with every record (0 = good)."""

    GOOD = 0
    COMM_FAIL = 1  # no answer (timeout) or link down: value is NaN
    PROTOCOL = 2  # Modbus exception response: value is NaN
    BAD_VALUE = 4  # decoded to NaN or infinity
    CLOCK_UNSYNCED = 8  # the wall clock was not known to be synchronised at the read
    BUSY = 16  # the device stayed busy (Modbus exception 5/6) through the retries: value is NaN


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Two-level high/low thresholds. None disables a level.

    A level raises when the value is beyond its threshold for `on_delay` seconds and clears
    when it is back inside by the hysteresis band for `off_delay` seconds.
    """

    high_alarm: float | None = None
    high_warning: float | None = None
    low_warning: float | None = None
    low_alarm: float | None = None
    hysteresis_pct: float = 2.0
    on_delay: float = 30.0
    off_delay: float = 60.0

    @property
    def enabled(self) -> bool:
        return any(
            v is not None
            for v in (self.high_alarm, self.high_warning, self.low_warning, self.low_alarm)
        )


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One monitored point, fully resolved (profile + device overrides)."""

    index: int  # position in AgentConfig.points and in every per-point array
    device: str
    key: str  # point key inside its device, e.g. "hopper_temp"
    code: str  # platform point code (unique across the config)
    name_zh: str
    name_en: str
    bus: str
    unit_id: int
    table: Table
    address: int
    type: DataType
    order: WordOrder
    scale: float
    offset: float
    unit: str
    kind: str  # sensor kind, e.g. "hopper_temperature"
    rule: ThresholdRule | None
    rules: PointRules = NO_RULES  # trend, window, state, quality and lifecycle rules
    bit: int | None = None  # a bit (0-15) of a 16-bit register: value 0 or 1
    read_mode: ReadMode = "block"  # "point": the device rejects multi-register reads
    # True when `code` was set in the config or profile (override.<key>.code or a point's
    # code); False when it defaulted to "device.key". Platforms need explicit codes.
    code_explicit: bool = False
    # registers (or bits) of this point's device declared unmapped (`holes`, any table): the
    # read plan never spans them
    holes: tuple[int, ...] = ()
    # decimals of the value on the wire (None: the point's resolution, agent.core.decimals)
    decimals: int | None = None
    # the address as the config wrote it when `addressing` is not zero_based ("40001"), else ""
    written_address: str = ""
    device_zh: str = ""  # the device's Chinese name ([[devices]] name_zh): Chinese alarm texts

    @property
    def width(self) -> int:
        """Registers (or bits, for coil/discrete points) the point occupies."""
        if self.table in ("coil", "discrete"):
            return 1
        return REGISTER_WIDTH[self.type]


@dataclass(frozen=True, slots=True)
class SiteSpec:
    enterprise_code: str
    gateway_id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class BusSpec:
    name: str
    type: BusType
    host: str  # tcp, rtu_tcp
    port: int  # tcp, rtu_tcp
    timeout: float  # seconds per attempt (on RTU: on top of the wire time at `baud`)
    retries: int
    poll_interval: float  # seconds between cycle starts
    serial_port: str = ""  # rtu: the serial device path
    baud: int | None = None  # rtu (required); rtu_tcp (optional: the device server's line)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: int = 8
    stopbits: int = 1
    turnaround: float | None = None  # silence before each request (None: 3.5 chars on RTU)
    late_guard: float | None = None  # silence required after a failed attempt (None: timeout)
    quarantine_after: int = 3  # consecutive failed cycles before a device is quarantined
    quarantine_first: float = 5.0  # first retry interval of a quarantined device (seconds)
    quarantine_max: float = 60.0  # cap of the doubling retry interval
    busy_retries: int = 2  # re-sends of a request answered with exception 5/6, within a cycle
    busy_delay: float = 0.05  # seconds before each such re-send
    round_trip: float | None = None  # tcp, rtu_tcp: LAN round trip per request (None: default)


@dataclass(frozen=True, slots=True)
class UplinkSpec:
    host: str
    port: int
    topic_prefix: str
    client_id: str
    keepalive: int = 30
    publish_timeout: float = 10.0
    max_records_per_message: int = 1000
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_bytes_per_message: int = 256 * 1024
    max_inflight: int = 10  # messages awaiting their acknowledgement at once
    backlog_rate: float = 10_000.0  # backlog records per second (0 = unlimited)
    health_interval: float = 60.0  # seconds between health messages (0 = off)
    tls: TlsSpec | None = None
    credentials: Credentials | None = None
    # None: plain backoff (backoff_base doubling to backoff_cap); the config always sets one
    reconnect: ReconnectPolicy | None = None


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """MQTT over TLS: ca_file None means the system CAs; cert/key for a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """MQTT username and password from secret files (agent.config.secrets), never the config."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StorageSpec:
    dir: Path
    max_bytes: int = 512 * 1024 * 1024
    journal_max_bytes: int = 8 * 1024 * 1024
    journal_keep: int = 5
    sync_interval: float = 10.0  # telemetry is fsync'ed at least this often (alarms: always)
    journal_hmac_key_file: Path | None = None
    journal_hmac_key: bytes | None = field(default=None, repr=False)  # None: not read
    cap_basis: str = ""  # how max_bytes was chosen, for `dust-agent check`


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """[operator]: where the operator socket is, who may use it, what shelving allows."""

    socket: Path
    group: str = "dust-agent-operators"
    max_shelve: float = 86400.0  # seconds
    allow_shelve_critical: bool = False


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole validated configuration. Built only by agent.config.load_config."""

    path: Path
    site: SiteSpec
    buses: tuple[BusSpec, ...]
    points: tuple[PointSpec, ...]
    uplink: UplinkSpec
    storage: StorageSpec
    platforms: tuple[PlatformSpec, ...] = ()  # [[platforms]]: HTTP uplinks beside MQTT
    web: WebSpec = field(default_factory=WebSpec)  # [web]: the local status page
    operator: OperatorSpec | None = None  # None only for configs built by hand (tests)
    language: str = "auto"  # the CLI's human output: "auto" (the locale), "zh" or "en"
    # "file: key path: message" lines `dust-agent check` prints without failing
    warnings: tuple[str, ...] = ()

    @property
    def operator_spec(self) -> OperatorSpec:
        """[operator], or its defaults next to the storage directory."""
        return self.operator or OperatorSpec(socket=self.storage.dir / "operator.sock")

    def topic(self, stream: str) -> str:
        site = self.site
        return f"{self.uplink.topic_prefix}/{site.enterprise_code}/{site.gateway_id}/{stream}"


@dataclass(slots=True)
class Frame:
    """One decoded poll cycle of one bus, as numpy columns of equal length.

    `index` holds global point indices (PointSpec.index). A failed read still yields its
    points, with value NaN and a non-zero quality: nothing goes silent.
    """

    index: npt.NDArray[np.intp]
    ts: npt.NDArray[np.float64]  # wall-clock epoch seconds at the read of each point's block
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    bus: str = ""

    def __len__(self) -> int:
        return int(self.index.shape[0])


Level = Literal["warning", "alarm", "critical"]
# ack / shelve / unshelve are operator actions (agent.service.ack); the level is unchanged by them.
Transition = Literal["raise", "escalate", "deescalate", "clear", "ack", "shelve", "unshelve"]
Direction = Literal["high", "low", "none"]  # "none": kinds with no side (state, comm_loss)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One alarm transition. `alarm_id` (`<point code>:<slot>`, `<device>:comm_loss`) is stable
    for one alarm of a point across restarts."""

    alarm_id: str
    point: str  # platform point code
    device: str
    key: str
    direction: Direction
    transition: Transition
    level: Level | None  # level after the transition (None after a clear)
    prev_level: Level | None
    value: float
    threshold: float
    unit: str
    ts: float  # source timestamp (epoch seconds of the reading that completed the transition)
    text_zh: str
    text_en: str
    # threshold, rate, deviation, drop, count, state, idle, stale, frozen, range, loop, comm_loss
    kind: str = "threshold"
    # Optional wire fields (docs/schema/alarm.schema.json): by, note, until, chattering, latched.
    extra: dict[str, object] = field(default_factory=dict)
    # The point's own measured value at `ts` (NaN: none, e.g. comm_loss). `value` is the rule's
    # quantity (a rate, a deviation, a count...), which equals it only for limit kinds.
    reading: float = math.nan

    def to_record(self) -> dict[str, object]:
        """The JSON-ready form used on the wire and in the journal."""
        return {
            **self.extra,
            "alarm_id": self.alarm_id,
            "kind": self.kind,
            "point": self.point,
            "device": self.device,
            "key": self.key,
            "direction": self.direction,
            "transition": self.transition,
            "level": self.level,
            "prev_level": self.prev_level,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "ts": round(self.ts * 1000),
            "reading": self.reading if math.isfinite(self.reading) else None,
            "text_zh": self.text_zh,
            "text_en": self.text_en,
        }
