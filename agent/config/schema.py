"""The config file's raw shape, as msgspec structs: types and unknown keys are checked here."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Off = Literal["off"]
Threshold = float | Off | UnsetType


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class RawRule(_Strict):
    """Threshold settings; any field left out is inherited, "off" disables a level."""

    high_alarm: Threshold = UNSET
    high_warning: Threshold = UNSET
    low_warning: Threshold = UNSET
    low_alarm: Threshold = UNSET
    hysteresis_pct: float | UnsetType = UNSET
    on_delay: float | UnsetType = UNSET
    off_delay: float | UnsetType = UNSET


class RawSite(_Strict):
    enterprise_code: str
    gateway_id: str
    name: str = ""


class RawBus(_Strict):
    name: str
    host: str
    type: Literal["tcp"] = "tcp"
    port: int = 502
    timeout: float = 1.0
    retries: int = 0
    poll_interval: float = 1.0


class RawPoint(_Strict):
    key: str
    table: Literal["holding", "input"]
    address: int
    type: Literal["uint16", "int16", "uint32", "int32", "float32"] = "uint16"
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    kind: str = "generic"
    name_zh: str = ""
    name_en: str = ""
    code: str | UnsetType = UNSET
    rule: RawRule | UnsetType = UNSET


class RawOverride(_Strict):
    """Per-device changes to one point of the device's profile."""

    code: str | UnsetType = UNSET
    scale: float | UnsetType = UNSET
    offset: float | UnsetType = UNSET
    unit: str | UnsetType = UNSET
    name_zh: str | UnsetType = UNSET
    name_en: str | UnsetType = UNSET
    rule: RawRule | UnsetType = UNSET


class RawDevice(_Strict):
    name: str
    bus: str
    unit: int
    profile: str | UnsetType = UNSET
    name_zh: str = ""
    points: list[RawPoint] = msgspec.field(default_factory=list)
    override: dict[str, RawOverride] = msgspec.field(default_factory=dict)


class RawProfile(_Strict):
    name: str
    points: list[RawPoint]
    description_zh: str = ""
    description_en: str = ""


class RawUplink(_Strict):
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "dust"
    client_id: str | UnsetType = UNSET
    keepalive: int = 30
    publish_timeout: float = 10.0
    max_records_per_message: int = 1000


class RawStorage(_Strict):
    dir: str | UnsetType = UNSET
    max_mb: float = 512.0
    journal_max_mb: float = 8.0
    journal_keep: int = 5


class RawRules(_Strict):
    defaults: RawRule = msgspec.field(default_factory=RawRule)
    kinds: dict[str, RawRule] = msgspec.field(default_factory=dict)


class RawConfig(_Strict):
    site: RawSite
    buses: list[RawBus]
    devices: list[RawDevice]
    uplink: RawUplink = msgspec.field(default_factory=RawUplink)
    storage: RawStorage = msgspec.field(default_factory=RawStorage)
    rules: RawRules = msgspec.field(default_factory=RawRules)
    profiles_dir: str = "profiles"
    rules_pack: str = "rules/default.toml"


class RawRulesPack(_Strict):
    defaults: RawRule
    kinds: dict[str, RawRule] = msgspec.field(default_factory=dict)


def field_names(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct)]


# The allowed values of each Literal field, for messages that list them.
CHOICES: dict[str, tuple[str, ...]] = {
    "type": ("uint16", "int16", "uint32", "int32", "float32"),
    "order": ("ABCD", "CDAB", "BADC", "DCBA"),
    "table": ("holding", "input"),
}
