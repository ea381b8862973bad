"""Point addresses as vendor manuals print them (`addressing`), and each point's wire decimals.

`addressing` (per device or per profile; docs/config.md "Addressing") says how a point's
`address` is written:

    zero_based  the protocol address (the default): holding 0 is the first holding register
    one_based   1 is the first register or bit of the point's table
    modicon     the table's prefix digit, then a 1-based number: 40001 -> holding 0,
                30001 -> input 0, 10001 -> discrete 0, 1 -> coil 0; also the 6-digit forms
                400001..465536, 300001.., 100001.., 000001..065536

The table of a point stays declared (`table`): a Modicon address whose prefix names another
table is an error, never a guess. With the default addressing an address that looks like
Modicon notation (40001 in a holding point) is a warning of `dust-agent check`; with
`addressing = "zero_based"` written out, it is taken as it is.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from msgspec import UnsetType

from agent.config.errors import ConfigError
from agent.config.schema import Addressing, RawDevice, RawOverride, RawPoint, RawProfile

MAX_DECIMALS = 9
# table -> its Modicon prefix digit
PREFIX: dict[str, int] = {"coil": 0, "discrete": 1, "input": 3, "holding": 4}
_TABLE_OF = {v: k for k, v in PREFIX.items()}


def point_decimals(p: RawPoint, ov: RawOverride, file: Path, ov_path: str, path: str) -> int | None:
    """The point's `decimals` (the device override wins), checked to be 0..MAX_DECIMALS."""
    for value, where in ((ov.decimals, ov_path), (p.decimals, path)):
        if isinstance(value, UnsetType):
            continue
        if not 0 <= value <= MAX_DECIMALS:
            raise ConfigError(file, f"{where}.decimals", f"decimals must be 0..{MAX_DECIMALS}")
        return value
    return None


def modicon_ranges(table: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The 5-digit and 6-digit Modicon ranges of a table (coil: 1..9999 and 1..65536)."""
    base = PREFIX[table]
    return (base * 10_000 + 1, base * 10_000 + 9_999), (base * 100_000 + 1, base * 100_000 + 65_536)


def from_modicon(table: str, a: int) -> int | None:
    """The protocol address of Modicon address `a` in `table`, or None if it is not one."""
    for lo, hi in modicon_ranges(table):
        if lo <= a <= hi:
            return a - lo
    return None


def _modicon_table(a: int) -> str | None:
    """The table a Modicon address names by its prefix (None: not a Modicon address)."""
    for table in ("discrete", "input", "holding", "coil"):
        if from_modicon(table, a) is not None:
            return table
    return None


def _ranges_text(table: str) -> str:
    (a, b), (c, d) = modicon_ranges(table)
    return f"{a:05d}..{b:05d} or {c:06d}..{d:06d}"


def translate(a: int, table: str, addressing: Addressing | None, file: Path, path: str) -> int:
    """The protocol (0-based) address of a point written as `a` in `addressing`."""
    if addressing == "one_based":
        if not 1 <= a <= 65536:
            raise ConfigError(
                file, path, f"address {a}: one_based addresses run 1..65536 (1 is {table} 0)"
            )
        return a - 1
    if addressing == "modicon":
        out = from_modicon(table, a)
        if out is None:
            other = _modicon_table(a)
            hint = f"; in Modicon notation {a} is in the {other} table" if other else ""
            raise ConfigError(
                file,
                path,
                f"address {a} is not a Modicon {table} address ({_ranges_text(table)}){hint}",
            )
        return out
    if a > 65535 and addressing is None and from_modicon(table, a) is not None:
        raise ConfigError(
            file,
            path,
            f"{table} address {a} is outside 0..65535; it looks like Modicon notation "
            f'({table} {from_modicon(table, a)}): set addressing = "modicon" on the device '
            "or profile",
        )
    return a


def lookalike(a: int, table: str) -> str:
    """A warning when a 0-based address looks like a Modicon one (coils cannot tell)."""
    if table == "coil":
        return ""
    (lo, hi), _ = modicon_ranges(table)
    if not lo <= a <= hi:
        return ""
    return (
        f"{table} address {a} looks like Modicon notation ({table} {a - lo} as a manual prints "
        f"it); addresses are 0-based by default, so this reads {table} {a}. If the manual "
        'prints it so, set addressing = "modicon" on the device or profile; if not, set '
        'addressing = "zero_based" to say so'
    )


def _opt(v: Addressing | UnsetType) -> Addressing | None:
    return None if isinstance(v, UnsetType) else v


def point_addressing(
    dev: RawDevice, profile: RawProfile | None, from_profile: bool
) -> Addressing | None:
    """A profile point: the profile's addressing, else the device's; a device point: the
    device's. None: not written (0-based, with lookalike warnings)."""
    if from_profile and profile is not None and _opt(profile.addressing) is not None:
        return _opt(profile.addressing)
    return _opt(dev.addressing)


def located_point(
    p: RawPoint, addressing: Addressing | None, file: Path, path: str, warnings: list[str]
) -> tuple[RawPoint, str]:
    """The point with its protocol address, and the address as written ("" if 0-based)."""
    at = f"{path}.address"
    if addressing is None:
        note = lookalike(p.address, p.table)
        if note:
            warnings.append(f"{file}: {at}: {note}")
    a = translate(p.address, p.table, addressing, file, at)
    if addressing in (None, "zero_based"):
        return msgspec.structs.replace(p, address=a), ""
    return msgspec.structs.replace(p, address=a), f"{p.address} ({addressing})"


def _holes(holes: list[int], addressing: Addressing | None, file: Path, path: str) -> list[int]:
    out = []
    for k, h in enumerate(holes):
        if addressing == "one_based":
            out.append(translate(h, "holding", addressing, file, f"{path}[{k}]"))
        elif addressing == "modicon":
            table = _modicon_table(h)
            if table is None:
                raise ConfigError(
                    file, f"{path}[{k}]", f"hole {h} is not an address in Modicon notation"
                )
            out.append(translate(h, table, addressing, file, f"{path}[{k}]"))
        else:
            out.append(h)
    return out


def with_protocol_holes(
    dev: RawDevice, i: int, cfg_file: Path, profile: tuple[RawProfile, Path] | None
) -> tuple[RawDevice, tuple[RawProfile, Path] | None]:
    """Device and profile with their `holes` as protocol addresses (each in its own
    addressing: the profile's holes in the profile's, the device's in the device's)."""
    holes = _holes(dev.holes, _opt(dev.addressing), cfg_file, f"devices[{i}].holes")
    dev2 = msgspec.structs.replace(dev, holes=holes)
    if profile is None:
        return dev2, None
    prof, pfile = profile
    notation = point_addressing(dev, prof, from_profile=True)
    prof2 = msgspec.structs.replace(prof, holes=_holes(prof.holes, notation, pfile, "holes"))
    return dev2, (prof2, pfile)
