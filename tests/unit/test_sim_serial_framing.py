"""The simulator opens a real serial port with the bus's character framing (issue 18 item 5).

The termios flags are checked as computed: a Linux pty ignores parity and character size, so a
pty cannot show them; on a USB-RS485 adapter these are the flags the driver receives."""

from __future__ import annotations

import termios

import pytest

from firmware_sim.rtu import _framing


@pytest.mark.parametrize(
    ("parity", "bytesize", "stopbits", "want_on", "want_off"),
    [
        ("N", 8, 1, termios.CS8, termios.PARENB | termios.CSTOPB),
        ("E", 8, 1, termios.CS8 | termios.PARENB, termios.PARODD | termios.CSTOPB),
        ("O", 8, 1, termios.CS8 | termios.PARENB | termios.PARODD, termios.CSTOPB),
        ("N", 8, 2, termios.CS8 | termios.CSTOPB, termios.PARENB),
        ("E", 7, 1, termios.CS7 | termios.PARENB, termios.PARODD),
    ],
)
def test_framing_flags(
    parity: str, bytesize: int, stopbits: int, want_on: int, want_off: int
) -> None:
    # start from the opposite settings, so every flag has to be set or cleared
    before = termios.PARODD | termios.CSTOPB | termios.PARENB | termios.CS6
    cflag = _framing(before, parity, bytesize, stopbits)
    assert cflag & termios.CSIZE == want_on & termios.CSIZE
    assert cflag & want_on == want_on
    assert cflag & want_off == 0
    assert cflag & (termios.CREAD | termios.CLOCAL) == termios.CREAD | termios.CLOCAL
