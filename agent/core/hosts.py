"""What is wrong with a `host` value (a URL, a port, a path), in words an installer can act on."""

from __future__ import annotations

import ipaddress
import re

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>\d*)$")


def host_problem(host: str, *, tls_hint: bool = False) -> str | None:
    """None if `host` is a bare host name or IP address; else what is wrong and the fix."""
    example = 'e.g. host = "127.0.0.1", port = 1883' if tls_hint else 'e.g. host = "10.0.0.5"'
    if not host.strip():
        return f"host is empty: give the host name or IP address ({example})"
    if host != host.strip() or any(c.isspace() for c in host):
        return f"host {host!r} contains spaces: give the bare host name or IP address"
    if m := _SCHEME.match(host):
        rest = m.group("rest").split("/", 1)[0]
        shown = f"{m.group('scheme')}://{'***@' if '@' in rest else ''}{rest.split('@')[-1]}"
        hp = _HOST_PORT.match(rest.split("@")[-1])
        bare = (hp.group("host").strip("[]") if hp else rest.split("@")[-1]) or "127.0.0.1"
        port = (
            f"port = {hp.group('port')}" if hp and hp.group("port") else "the port in the port key"
        )
        tls = ", and tls = true for TLS (mqtts)" if tls_hint else ""
        creds = "; user and password go in username_file / password_file" if "@" in rest else ""
        return (
            f"host '{shown}' is a URL: give the bare host name or IP address: "
            f'host = "{bare}", {port}{tls}{creds}'
        )
    if "/" in host or "@" in host:
        return "host is not a host name (it has / or @): give the bare host name or IP address"
    try:
        ipaddress.IPv6Address(host.strip("[]"))
        return None  # an IPv6 literal has colons of its own
    except ValueError:
        pass
    if m := _HOST_PORT.match(host):
        return (
            f'host {host!r} includes a port: give host = "{m.group("host").strip("[]")}" '
            f"and port = {m.group('port') or '<port>'}"
        )
    return None
