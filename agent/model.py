"""Core types shared by every stage: the validated config, frames, alarm events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from drivers.base import Table

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DATA_TYPES: tuple[DataType, ...] = ("uint16", "int16", "uint32", "int32", "float32")
WORD_ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
REGISTER_WIDTH: dict[DataType, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
}


class Quality(enum.IntFlag):
    """Per-reading quality bits, sent with every record (0 = good)."""

    GOOD = 0
    COMM_FAIL = 1  # no answer (timeout) or link down: value is NaN
    PROTOCOL = 2  # Modbus exception response: value is NaN
    BAD_VALUE = 4  # decoded to NaN or infinity
    CLOCK_UNSYNCED = 8  # the wall clock was not known to be synchronised at the read


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

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


@dataclass(frozen=True, slots=True)
class SiteSpec:
    enterprise_code: str
    gateway_id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class BusSpec:
    name: str
    type: Literal["tcp"]
    host: str
    port: int
    timeout: float  # seconds per attempt
    retries: int
    poll_interval: float  # seconds between cycle starts


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


@dataclass(frozen=True, slots=True)
class StorageSpec:
    dir: Path
    max_bytes: int = 512 * 1024 * 1024
    journal_max_bytes: int = 8 * 1024 * 1024
    journal_keep: int = 5


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole validated configuration. Built only by agent.config.load_config."""

    path: Path
    site: SiteSpec
    buses: tuple[BusSpec, ...]
    points: tuple[PointSpec, ...]
    uplink: UplinkSpec
    storage: StorageSpec

    def points_of_bus(self, bus: str) -> tuple[PointSpec, ...]:
        return tuple(p for p in self.points if p.bus == bus)

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


Level = Literal["warning", "alarm"]
Transition = Literal["raise", "escalate", "deescalate", "clear"]
Direction = Literal["high", "low", "none"]  # "none": kinds with no side (state, comm_loss)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One alarm transition. `alarm_id` is stable for a (point, direction) across restarts."""

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
    # threshold; later: rate, deviation, drop, count, state, quality, comm_loss
    kind: str = "threshold"
    extra: dict[str, object] = field(default_factory=dict)

    def to_record(self) -> dict[str, object]:
        """The JSON-ready form used on the wire and in the journal."""
        return {
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
            "text_zh": self.text_zh,
            "text_en": self.text_en,
        }
