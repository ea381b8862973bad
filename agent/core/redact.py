"""Text from outside made safe to show: URL credentials hidden, control characters escaped.

`redact_url` is used wherever a configured URL is shown (check, status.json, health, logs);
`printable` wherever text a peer sent (a platform's reply, a broker's topic) reaches a log
line, so that a CR/LF cannot forge a log line and an ESC cannot drive the operator's terminal.
"""

from __future__ import annotations

import re

REPLY_LIMIT = 200  # characters of a peer's text kept in one log line

# scheme://user:password@host → scheme://***@host (the user name may itself be a secret)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def redact_url(url: str) -> str:
    """`url` without the user:password part (replaced by ***), else unchanged."""
    return _USERINFO.sub(r"\g<scheme>***@", url)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int = REPLY_LIMIT) -> str:
    """`text` with every non-printable character (CR, LF, ESC, NUL, U+2028, ...) escaped as
    \\xNN / \\uNNNN and at most `limit` characters long ("…" marks a cut)."""
    cut = len(text) > limit
    head = text[:limit]
    out = "".join(ch if ch.isprintable() else _escape(ch) for ch in head)
    return out + "…" if cut else out
