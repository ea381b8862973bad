"""The config file's raw shape, as msgspec structs: types and unknown keys are checked here."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Off = Literal["off"]
Addressing = Literal["zero_based", "one_based", "modicon"]  # agent.config.addressing
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
    # The other rule kinds (docs/config.md "Rules"; agent/core/rulespec.py says what each does).
    when: str | UnsetType = UNSET  # gate: "key" or "device.key" that must be on; "off" = none
    rate_warning: Threshold = UNSET
    rate_alarm: Threshold = UNSET
    rate_window: float | UnsetType = UNSET
    rate_per: float | UnsetType = UNSET
    rate_relative: bool | UnsetType = UNSET
    rate_hold: float | UnsetType = UNSET
    deviation_warning: Threshold = UNSET
    deviation_alarm: Threshold = UNSET
    baseline_tau: float | UnsetType = UNSET
    drop_warning: Threshold = UNSET
    drop_alarm: Threshold = UNSET
    drop_window: float | UnsetType = UNSET
    count_warning: Threshold = UNSET
    count_alarm: Threshold = UNSET
    count_window: float | UnsetType = UNSET
    count_bits: int | UnsetType = UNSET
    state_warning: list[int] | UnsetType = UNSET
    state_alarm: list[int] | UnsetType = UNSET
    state_critical: list[int] | UnsetType = UNSET
    state_delay: float | UnsetType = UNSET
    idle_states: list[int] | UnsetType = UNSET
    idle_delay: float | UnsetType = UNSET
    stale_polls: Threshold = UNSET
    frozen_polls: int | Off | UnsetType = UNSET
    range_min: Threshold = UNSET
    range_max: Threshold = UNSET
    loop_ma: bool | UnsetType = UNSET
    latch: bool | UnsetType = UNSET
    chatter_count: int | UnsetType = UNSET
    # Levels in percent of a per-point reference value (dust: the MEC; wet tank: the low
    # setpoint; wet flow: the design flow): level = reference x pct / 100.
    reference: Threshold = UNSET
    high_warning_pct: Threshold = UNSET
    high_alarm_pct: Threshold = UNSET
    low_warning_pct: Threshold = UNSET
    low_alarm_pct: Threshold = UNSET
    when_min_level: Literal["warning", "alarm"] | UnsetType = UNSET  # lowest level gated
    deviation_absolute: bool | UnsetType = UNSET  # deviation in the point's unit, not %
    deviation_hold: float | UnsetType = UNSET  # the deviation warning's on-delay
    minus: str | UnsetType = UNSET  # difference rule: "key" or "device.key" subtracted
    diff_warning: Threshold = UNSET
    diff_alarm: Threshold = UNSET


class RawSite(_Strict):
    enterprise_code: str
    gateway_id: str
    name: str = ""


class RawBus(_Strict):
    name: str
    type: str = "tcp"  # a registered driver (drivers.registry): tcp, rtu, rtu_tcp, ...
    host: str | UnsetType = UNSET  # tcp, rtu_tcp
    port: int | str = 502  # TCP port (tcp, rtu_tcp) or the serial device path (rtu)
    timeout: float = 1.0
    retries: int = 0
    poll_interval: float = 1.0
    # serial line (rtu; on rtu_tcp `baud` is optional: the device server's serial side)
    baud: int | UnsetType = UNSET
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    turnaround: float | UnsetType = UNSET
    late_guard: float | UnsetType = UNSET
    quarantine_after: int = 3
    quarantine_first: float = 5.0
    quarantine_max: float = 60.0
    busy_retries: int = 2  # exception 5/6: re-sends of that request within the cycle
    busy_delay: float = 0.05  # seconds before each re-send
    round_trip: float | UnsetType = UNSET  # tcp, rtu_tcp: LAN round trip for the estimate


class RawPoint(_Strict):
    key: str
    table: Literal["holding", "input", "coil", "discrete"]
    address: int
    type: Literal["uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"] = (
        "uint16"
    )
    bit: int | UnsetType = UNSET  # a bit 0..15 of a 16-bit register
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    kind: str = "generic"
    name_zh: str = ""
    name_en: str = ""
    code: str | UnsetType = UNSET
    rule: RawRule | UnsetType = UNSET
    decimals: int | UnsetType = UNSET  # on the wire (default: the point's resolution)


class RawOverride(_Strict):
    """Per-device changes to one point of the device's profile."""

    code: str | UnsetType = UNSET
    scale: float | UnsetType = UNSET
    offset: float | UnsetType = UNSET
    unit: str | UnsetType = UNSET
    name_zh: str | UnsetType = UNSET
    name_en: str | UnsetType = UNSET
    rule: RawRule | UnsetType = UNSET
    decimals: int | UnsetType = UNSET


class RawDevice(_Strict):
    name: str
    bus: str
    unit: int
    profile: str | UnsetType = UNSET
    name_zh: str = ""
    read_mode: Literal["block", "point"] = "block"
    addressing: Addressing | UnsetType = UNSET  # how point addresses are written (default 0-based)
    holes: list[int] = msgspec.field(default_factory=list)  # unmapped addresses (with profile's)
    points: list[RawPoint] = msgspec.field(default_factory=list)
    override: dict[str, RawOverride] = msgspec.field(default_factory=dict)


class RawProfile(_Strict):
    name: str
    points: list[RawPoint]
    addressing: Addressing | UnsetType = UNSET  # how its addresses are written (default 0-based)
    holes: list[int] = msgspec.field(default_factory=list)  # unmapped addresses, any table
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
    max_bytes_per_message: int = 256 * 1024
    max_inflight: int = 10
    backlog_records_per_s: float = 10_000.0
    health_interval: float = 60.0
    # reconnect (agent.core.backoff.ReconnectPolicy; docs/config.md says why these defaults)
    reconnect_initial: float = 0.1  # first probe after a loss
    reconnect_cap: float = 0.25  # longest interval between probes while the broker is down
    reconnect_jitter: float = 5.5  # MQTT CONNECTs spread over a cycle of this many s
    reconnect_slot: int | UnsetType = UNSET  # this gateway's number in its fleet (phase)
    reconnect_refused: float = 60.0  # wait after a refused login or a failed TLS handshake
    tls: bool | UnsetType = UNSET  # default: true when ca_file or cert_file is set
    ca_file: str | UnsetType = UNSET
    cert_file: str | UnsetType = UNSET
    key_file: str | UnsetType = UNSET
    username_file: str | UnsetType = UNSET
    password_file: str | UnsetType = UNSET
    username_credential: str | UnsetType = UNSET
    password_credential: str | UnsetType = UNSET
    allow_plaintext_password: bool = False  # a password over MQTT without TLS: opt-in only


class RawStorage(_Strict):
    dir: str | UnsetType = UNSET
    max_mb: float | UnsetType = UNSET  # default: 7 days at the configured poll rate
    sync_interval: float = 10.0
    journal_max_mb: float = 8.0
    journal_keep: int = 5
    journal_hmac_key_file: str | UnsetType = UNSET  # key of the journal's HMAC chain


class RawOperator(_Strict):
    """[operator]: the local operator socket (dust-agent ack / shelve / unshelve)."""

    socket: str | UnsetType = UNSET  # default: /run/dust-agent/operator.sock or <storage.dir>
    group: str = "dust-agent-operators"
    max_shelve: float = 86400.0
    allow_shelve_critical: bool = False


class RawFieldMap(_Strict):
    """One endpoint's declarative field mapping (agent.core.platformspec.FieldMap)."""

    endpoint: str
    fields: dict[str, str]
    list_key: str = ""
    extra: dict[str, str] = msgspec.field(default_factory=dict)


class RawPlatform(_Strict):
    """A [[platforms]] entry: a provincial or ministry HTTP uplink (docs/platforms.md)."""

    profile: str  # a registered platform profile (agent.uplink.platforms.registry)
    url: str
    name: str | UnsetType = UNSET  # default: the profile name
    enterprise_code: str | UnsetType = UNSET  # qybm; default: site.enterprise_code
    gateway_code: str | UnsetType = UNSET  # wgbm; default: site.gateway_id
    period: float = 60.0  # rtsData: one value per point every `period` s (at most 300)
    decimals: int = 2
    point_decimals: dict[str, int] = msgspec.field(default_factory=dict)  # code or device.key
    points: list[str] | UnsetType = UNSET  # "device" or "device.key"; default: every point
    scd: dict[str, int] = msgspec.field(default_factory=dict)  # over the default table
    timezone: str = "Asia/Shanghai"
    timeout: float = 10.0
    max_items: int = 500
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    hex_upper: bool | UnsetType = UNSET  # default: upper for hebei_v1_1, lower for mem
    allow_http: bool = False  # plain http:// (the data and appsecret in clear): opt-in only
    ca_file: str | UnsetType = UNSET  # HTTPS: the CA of the platform's certificate (PEM)
    key_file: str | UnsetType = UNSET
    key_credential: str | UnsetType = UNSET
    iv_file: str | UnsetType = UNSET
    iv_credential: str | UnsetType = UNSET
    appid_file: str | UnsetType = UNSET
    appid_credential: str | UnsetType = UNSET
    appsecret_file: str | UnsetType = UNSET
    appsecret_credential: str | UnsetType = UNSET
    telemetry: RawFieldMap | UnsetType = UNSET  # mem: required; hebei_v1_1: fixed (rtsData)
    alarm: RawFieldMap | UnsetType = UNSET  # mem: required; hebei_v1_1: fixed (eventsData)


class RawWeb(_Strict):
    """The [web] table: the local status page (agent.config.web, docs/operations.md)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 8080
    token_file: str | UnsetType = UNSET  # required when `bind` is not a loopback address
    allow_ack: bool = False
    history_hours: int = 24
    history_step: float = 60.0


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
    platforms: list[RawPlatform] = msgspec.field(default_factory=list)
    web: RawWeb | UnsetType = UNSET
    operator: RawOperator = msgspec.field(default_factory=RawOperator)
    profiles_dir: str = "profiles"
    rules_pack: str = "rules/default.toml"
    language: Literal["auto", "zh", "en"] = "auto"  # the CLI's human output; auto = locale


class RawRulesPack(_Strict):
    defaults: RawRule
    kinds: dict[str, RawRule] = msgspec.field(default_factory=dict)


def field_names(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    """The struct's field names (msgspec's own list; structs.fields() evaluates every
    annotation again on each call, ~0.8 ms, which once a point made up half of a load)."""
    names: tuple[str, ...] = struct.__struct_fields__
    return names


# The allowed values of each Literal field, for messages that list them.
CHOICES: dict[str, tuple[str, ...]] = {
    "type": ("uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"),
    "order": ("ABCD", "CDAB", "BADC", "DCBA"),
    "table": ("holding", "input", "coil", "discrete"),
    "read_mode": ("block", "point"),
    "addressing": ("zero_based", "one_based", "modicon"),
    "bus.parity": ("N", "E", "O"),
    "language": ("auto", "zh", "en"),
}
