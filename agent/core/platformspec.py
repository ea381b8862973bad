"""The validated `[[platforms]]` entry: codes, period, decimals, scd table, field mapping, keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

Profile = str  # a registered platform profile (agent.uplink.platforms.registry): hebei_v1_1, mem

NOT_SENT: Final = -1  # an scd of -1: the kind is not sent to the platform as a status

# Our alarm → the platform's status code `scd` (docs/platforms.md, "What each alarm kind
# sends"). Hebei V1.1 names 0 (clear) and 4 (high-high); the rest is a graded guess until a
# province's table says otherwise: 1 low-low, 2 low, 3 high, 4 high-high. Keys: "clear",
# "<kind>.<direction>.<level>", "<kind>.<level>", "<kind>", "<direction>.<level>" (most
# specific first; see scd_for).
#
# A platform event means "the point's measured value `avx` crossed the limit `threshold`".
# Only threshold alarms (and state/idle, whose condition is on the point's own reading) are
# that. The kinds below alarm on another quantity (a rate, a deviation from a baseline, a
# drop, a count, a difference to another point) or on the sensor itself (stale, frozen, out
# of range, 4-20 mA loop): sent as 3/4 they would tell the platform the reading is above its
# high limit, which it is not. They stay local (journal, MQTT) unless a province's table
# gives them a code (e.g. scd = { "rate.alarm" = 4 }). comm_loss is sent (for every point of
# the device) with a code of its own, 5, not in the document: it explains missing values.
NOT_LIMIT_KINDS: Final = (
    "rate",
    "deviation",
    "difference",
    "drop",
    "count",
    "stale",
    "frozen",
    "range",
    "loop",
)
DEFAULT_SCD: Final[Mapping[str, int]] = {
    "clear": 0,
    "high.warning": 3,
    "high.alarm": 4,
    "high.critical": 4,
    "low.warning": 2,
    "low.alarm": 1,
    "low.critical": 1,
    "none.warning": 3,
    "none.alarm": 4,
    "none.critical": 4,
    "comm_loss": 5,
    **{kind: NOT_SENT for kind in NOT_LIMIT_KINDS},
}


@dataclass(frozen=True, slots=True)
class FieldMap:
    """How one stream becomes the inner JSON of one endpoint.

    Each item is built from `fields` (output name → template); a template "{name}" takes the
    record's field `name` with its type, any other string is formatted with the fields, and a
    string without braces is a literal. The inner JSON is the list of items, or, when
    `list_key` is set, an object {**extra, list_key: items}; a dotted `list_key` nests:
    "data.rts" gives {**extra, "data": {"rts": items}} (Hebei V1.1).
    """

    endpoint: str
    fields: tuple[tuple[str, str], ...]
    list_key: str = ""
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    name: str  # the uplink's name in health, status and the outbox's delivery progress
    profile: Profile
    url: str  # base URL; an endpoint's path is appended after a "/"
    enterprise_code: str  # qybm
    gateway_code: str  # wgbm
    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    telemetry: FieldMap | None
    alarm: FieldMap | None
    codes: frozenset[str]  # the point codes sent to this platform
    decimals: Mapping[str, int]  # per point code
    # device -> the codes of its points sent to this platform (comm_loss goes to each)
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_decimals: int = 2
    period: float = 60.0  # seconds: one value per point and period (rtsData)
    scd: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SCD))
    appid: str = ""
    appsecret: str = field(default="", repr=False)
    timezone: str = "Asia/Shanghai"  # the platform's local time for "YYYY-MM-DD HH:MM:SS"
    timeout: float = 10.0  # seconds per HTTP request
    max_items: int = 500  # items per request
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    hex_upper: bool = True  # the envelope's hex case

    def decimals_of(self, code: str) -> int:
        return self.decimals.get(code, self.default_decimals)


def scd_for(table: Mapping[str, int], kind: str, direction: str, level: str | None) -> int:
    """The status code for an alarm record after its transition (level None: cleared)."""
    if level is None:
        return table.get(f"{kind}.clear", table.get("clear", 0))
    for key in (f"{kind}.{direction}.{level}", f"{kind}.{level}", kind, f"{direction}.{level}"):
        if key in table:
            return table[key]
    return table.get(f"high.{level}", DEFAULT_SCD.get(f"high.{level}", 4))
