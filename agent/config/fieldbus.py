"""Field-bus config checks: bus settings (the address keys by the bus type's registered driver,
drivers.registry), point addressing and declared holes (unmapped registers the read plan must
not span)."""

from __future__ import annotations

from pathlib import Path

from msgspec import UNSET, UnsetType

from agent.config.errors import ConfigError
from agent.config.schema import RawBus, RawDevice, RawPoint, RawProfile
from agent.core.model import REGISTER_WIDTH, BusSpec, PointSpec
from drivers.base import BusAddress, BusConfigError, BusFields
from drivers.registry import driver

BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MAX_BUSY_RETRIES = 5
MAX_BUSY_DELAY = 1.0  # seconds: a busy retry must stay well inside a poll cycle


def _opt(v: float | UnsetType) -> float | None:
    return None if isinstance(v, UnsetType) else float(v)


def _address(b: RawBus, file: Path, at: str) -> BusAddress:
    """The bus's driver (by its type) checks the address keys."""
    try:
        entry = driver(b.type)
    except KeyError as exc:
        raise ConfigError(file, f"{at}.type", exc.args[0]) from None
    host = None if isinstance(b.host, UnsetType) else b.host
    baud = None if isinstance(b.baud, UnsetType) else b.baud
    try:
        return entry.address(BusFields(b.type, host, b.port, baud))
    except BusConfigError as exc:
        raise ConfigError(file, f"{at}.{exc.key}", str(exc)) from None


def bus_spec(b: RawBus, i: int, file: Path) -> BusSpec:
    """Check one [[buses]] entry (its address through its driver) and build its BusSpec."""
    at = f"buses[{i}]"
    address = _address(b, file, at)
    baud = None if isinstance(b.baud, UnsetType) else b.baud
    if baud is not None and baud not in BAUDS:
        raise ConfigError(
            file, f"{at}.baud", f"baud {baud} is not one of {', '.join(map(str, BAUDS))}"
        )
    for key in ("turnaround", "late_guard"):
        v = _opt(getattr(b, key))
        if v is not None and not 0 <= v <= 10:
            raise ConfigError(file, f"{at}.{key}", f"{key} must be 0..10 seconds")
    _check_busy_and_round_trip(b, at, file)
    if b.quarantine_after < 1:
        raise ConfigError(file, f"{at}.quarantine_after", "must be at least 1 failed cycle")
    if not 0 < b.quarantine_first <= b.quarantine_max:
        raise ConfigError(
            file, f"{at}.quarantine_first", "must be above 0 and at most quarantine_max"
        )
    return BusSpec(
        name=b.name,
        type=b.type,
        host=address.host,
        port=address.port,
        timeout=b.timeout,
        retries=b.retries,
        poll_interval=b.poll_interval,
        serial_port=address.serial_port,
        baud=baud,
        parity=b.parity,
        bytesize=b.bytesize,
        stopbits=b.stopbits,
        turnaround=_opt(b.turnaround),
        late_guard=_opt(b.late_guard),
        quarantine_after=b.quarantine_after,
        quarantine_first=b.quarantine_first,
        quarantine_max=b.quarantine_max,
        busy_retries=b.busy_retries,
        busy_delay=b.busy_delay,
        round_trip=_opt(b.round_trip),
    )


def _check_busy_and_round_trip(b: RawBus, at: str, file: Path) -> None:
    if not 0 <= b.busy_retries <= MAX_BUSY_RETRIES:
        raise ConfigError(file, f"{at}.busy_retries", f"busy_retries must be 0..{MAX_BUSY_RETRIES}")
    if not 0 <= b.busy_delay <= MAX_BUSY_DELAY:
        raise ConfigError(
            file, f"{at}.busy_delay", f"busy_delay must be 0..{MAX_BUSY_DELAY:g} seconds"
        )
    rt = _opt(b.round_trip)
    if rt is not None and not 0 < rt <= 10:
        raise ConfigError(file, f"{at}.round_trip", "round_trip must be above 0, at most 10 s")


def check_point_io(p: RawPoint, file: Path, path: str) -> None:
    """Table, type and bit of one point fit together."""
    if p.table in ("coil", "discrete"):
        if p.type != "uint16" or p.bit is not UNSET:
            raise ConfigError(
                file,
                f"{path}.type" if p.type != "uint16" else f"{path}.bit",
                f"a {p.table} point reads one bit (value 0 or 1): leave out type and bit",
            )
        if not 0 <= p.address <= 65535:
            raise ConfigError(file, f"{path}.address", f"bit address {p.address} outside 0..65535")
        return
    if not isinstance(p.bit, UnsetType):
        if REGISTER_WIDTH[p.type] != 1:
            raise ConfigError(
                file, f"{path}.bit", f"bit needs a 16-bit type (uint16 or int16), not {p.type}"
            )
        if not 0 <= p.bit <= 15:
            raise ConfigError(file, f"{path}.bit", f"bit {p.bit} is outside 0..15")


def regs_clash(a: PointSpec, b: PointSpec) -> bool:
    """True if b (at an address >= a's) shares a register or bit with a. Bit fields of one
    register share it legitimately, unless they name the same bit."""
    if b.address >= a.address + a.width:
        return False
    if a.bit is not None and b.bit is not None and a.address == b.address:
        return a.bit == b.bit
    return True


def device_holes(
    dev: RawDevice, i: int, cfg_file: Path, profile: tuple[RawProfile, Path] | None
) -> tuple[int, ...]:
    """The device's declared holes (its own and its profile's), each checked to be 0..65535."""
    sources = [(dev.holes, cfg_file, f"devices[{i}].holes")]
    if profile is not None:
        sources.append((profile[0].holes, profile[1], "holes"))
    out: set[int] = set()
    for holes, file, path in sources:
        for k, h in enumerate(holes):
            if not 0 <= h <= 65535:
                raise ConfigError(file, f"{path}[{k}]", f"hole {h} is outside 0..65535")
            out.add(h)
    return tuple(sorted(out))


def check_not_on_hole(p: PointSpec, file: Path, path: str) -> None:
    """A point must not sit on a register its device declares unmapped."""
    hit = [h for h in p.holes if p.address <= h < p.address + p.width]
    if hit:
        raise ConfigError(
            file,
            f"{path}.address",
            f"{p.table} {p.address} of {p.device}.{p.key} covers register {hit[0]}, which the "
            "device declares a hole (holes = [...]): fix the address or the holes list",
        )
