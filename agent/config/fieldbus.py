"""Field-bus config checks: bus settings per type (tcp, rtu, rtu_tcp), point addressing and
declared holes (unmapped registers the read plan must not span)."""

from __future__ import annotations

from pathlib import Path

from msgspec import UNSET, UnsetType

from agent.config.errors import ConfigError
from agent.config.schema import RawBus, RawDevice, RawPoint, RawProfile
from agent.core.model import REGISTER_WIDTH, BusSpec, PointSpec

BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MAX_BUSY_RETRIES = 5
MAX_BUSY_DELAY = 1.0  # seconds: a busy retry must stay well inside a poll cycle


def _opt(v: float | UnsetType) -> float | None:
    return None if isinstance(v, UnsetType) else float(v)


def bus_spec(b: RawBus, i: int, file: Path) -> BusSpec:
    """Check one [[buses]] entry (by its type) and build its BusSpec."""
    at = f"buses[{i}]"
    host = "" if isinstance(b.host, UnsetType) else b.host
    port, serial_port = 0, ""
    if b.type == "rtu":
        if not isinstance(b.port, str) or not b.port:
            raise ConfigError(
                file,
                f"{at}.port",
                "an rtu bus needs the serial device path, e.g. port = "
                '"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0" (stable '
                "across replugs; `ls /dev/serial/by-id/` lists them) or /dev/ttyUSB0",
            )
        if b.host is not UNSET:
            raise ConfigError(file, f"{at}.host", "an rtu bus has no host (it is a serial port)")
        if isinstance(b.baud, UnsetType):
            raise ConfigError(file, f"{at}.baud", "an rtu bus needs baud, e.g. baud = 9600")
        serial_port = b.port
    else:
        if not host:
            raise ConfigError(file, f"{at}.host", f"a {b.type} bus needs host (the address)")
        if not isinstance(b.port, int) or not 1 <= b.port <= 65535:
            raise ConfigError(
                file, f"{at}.port", f"a {b.type} bus needs a TCP port 1..65535, got {b.port!r}"
            )
        port = b.port
        if b.type == "tcp" and b.baud is not UNSET:
            raise ConfigError(file, f"{at}.baud", "baud applies to rtu and rtu_tcp buses only")
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
        host=host,
        port=port,
        timeout=b.timeout,
        retries=b.retries,
        poll_interval=b.poll_interval,
        serial_port=serial_port,
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
    if rt is not None:
        if b.type == "rtu":
            raise ConfigError(
                file, f"{at}.round_trip", "round_trip applies to tcp and rtu_tcp buses only"
            )
        if not 0 < rt <= 10:
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
