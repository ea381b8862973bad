"""MQTT uplink over aiomqtt (the only module that imports it): QoS 1, retained status, will.

Every aiomqtt/paho error is translated here, once, into agent.uplink.contract.UplinkError with a
message an installer can act on ("cannot reach MQTT broker 127.0.0.1:1883: connection
refused"); a CONNACK refusal or a failed TLS handshake is UplinkRefused. `probe()` is the cheap
reachability check the forwarding loop runs while the broker is down (a TCP connect, closed at
once, no MQTT), and it names the cause the same way ("connection refused", "host unreachable").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt

from agent import __version__
from agent.core.model import SiteSpec, UplinkSpec
from agent.uplink.contract import UplinkError, UplinkRefused
from agent.uplink.payload import build_status

__all__ = ["MqttUplink", "UplinkError", "UplinkRefused", "tls_context"]

log = logging.getLogger(__name__)

DROP_WAIT = 1.0  # seconds a dropped or failed connection may take to end
# aiomqtt/paho log here; their errors reach us as exceptions (translated below), so only
# errors are logged (not e.g. aiomqtt's "Could not gracefully disconnect" after a drop)
_CLIENT_LOG = logging.getLogger("agent.uplink.mqtt.client")
_CLIENT_LOG.setLevel(logging.ERROR)

CONSUMER = "mqtt"  # the MQTT uplink's outbox consumer name (and its key in health "uplinks")

_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
PROBE_TIMEOUT = 3.0  # seconds a probe's TCP connect may take (a black-holed host)
# CONNACK codes (MQTT 3.1.1 and 5) that say "not you, not like this": protocol version, client
# id, credentials, authorisation, banned, bad auth method
_REFUSED_RC = frozenset({1, 2, 4, 5, 132, 133, 134, 135, 138, 140})
# what an OSError from a connect means, in the words an installer searches for
_OS_CAUSE = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "connection timed out",
}
# paho's codes for "the socket is gone" (NO_CONN, CONN_LOST): the cause is not in the code
_GONE_RC = frozenset({4, 7})


def os_cause(exc: OSError) -> str:
    """A short lower-case cause for a socket error ("connection refused", "host unreachable")."""
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    known = _OS_CAUSE.get(exc.errno or 0)
    if known:
        return known
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    text = _ERRNO.sub("", str(exc)).strip() or type(exc).__name__
    return text[:1].lower() + text[1:]


def _rc(exc: aiomqtt.MqttError) -> int | None:
    """The MQTT/paho code of an aiomqtt error as an int (paho gives a ReasonCode or an int)."""
    if not isinstance(exc, aiomqtt.MqttCodeError) or exc.rc is None:
        return None
    rc: Any = exc.rc
    return int(getattr(rc, "value", rc))


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails.

    paho wraps the TCP socket with do_handshake_on_connect=False and calls do_handshake()
    itself; when that raises, paho drops the socket without closing it, so each failed TLS
    attempt would hold a file descriptor until the garbage collector finalises it (with a
    ResourceWarning). `SSLContext.sslsocket_class` (public, documented) installs this class.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(spec: UplinkSpec) -> ssl.SSLContext | None:
    """The TLS context for spec.tls (None when TLS is off); UplinkError for unusable files."""
    tls = spec.tls
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"cannot load uplink.ca_file {tls.ca_file}: {exc}") from exc
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(
                f"cannot load the client certificate uplink.cert_file {tls.cert_file} with "
                f"uplink.key_file {tls.key_file}: {exc}"
            ) from exc
    return ctx


def _closing(ctx: ssl.SSLContext | None) -> ssl.SSLContext | None:
    if ctx is not None:
        ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


class MqttUplink:
    """One MQTT connection at a time; connect() builds a new aiomqtt.Client every time."""

    def __init__(
        self,
        spec: UplinkSpec,
        site: SiteSpec,
        *,
        status_topic: str | None = None,
        version: str = __version__,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.spec = spec
        self.site = site
        self.status_topic = status_topic or (
            f"{spec.topic_prefix}/{site.enterprise_code}/{site.gateway_id}/status"
        )
        self.version = version
        self._tls = _closing(tls if tls is not None else tls_context(spec))
        creds = spec.credentials
        self._username = username if username is not None else (creds.username if creds else None)
        self._password = password if password is not None else (creds.password if creds else None)
        self._client: aiomqtt.Client | None = None

    @property
    def target(self) -> str:
        scheme = "mqtts" if self._tls else "mqtt"
        return f"{scheme}://{self.spec.host}:{self.spec.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def probe(self) -> None:
        """Open a TCP connection to the broker and close it at once (no MQTT); UplinkError
        naming the cause when that fails. The broker sees an accept and an EOF, nothing else."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                _, writer = await asyncio.open_connection(self.spec.host, self.spec.port)
        except TimeoutError as exc:
            raise UplinkError(
                f"cannot reach MQTT broker {self._where}: no answer within {PROBE_TIMEOUT:g} s"
            ) from exc
        except OSError as exc:
            raise UplinkError(f"cannot reach MQTT broker {self._where}: {os_cause(exc)}") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def connect(self) -> None:
        """CONNECT with a retained "offline" will, then publish the retained "online" birth."""
        await self.close(clean=False)
        will = aiomqtt.Will(
            self.status_topic,
            payload=build_status(self.site, "offline", version=self.version, reason="lost"),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            self.spec.host,
            self.spec.port,
            identifier=self.spec.client_id,
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            will=will,
            keepalive=self.spec.keepalive,
            timeout=self.spec.publish_timeout,  # also bounds the wait for CONNACK
            clean_session=True,  # the outbox is our durability, not the broker session
            max_inflight_messages=self.spec.max_inflight,
            max_queued_outgoing_messages=self.spec.max_inflight + 10,  # + side messages
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=_CLIENT_LOG,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            if not isinstance(exc.__context__, OSError):  # a socket is open: end it
                await self._end(client)
            raise self._connect_error(exc) from exc
        except OSError as exc:  # e.g. a TLS handshake failure raised past aiomqtt
            kind = UplinkRefused if _tls_refusal(exc) else UplinkError
            raise kind(self._explain_os(exc)) from exc
        except BaseException:  # cancelled mid-handshake: leave no half-open socket behind
            await self._end(client)
            raise
        self._client = client
        status = build_status(self.site, "online", version=self.version, reason="connected")
        try:
            await self._publish(self.status_topic, status, retain=True)
        except BaseException:
            await self._drop()
            raise

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish; returns after the PUBACK, or raises UplinkError after the timeout."""
        await self._publish(topic, payload, retain=False)

    async def close(self, *, clean: bool) -> None:
        """clean: retained "offline" goodbye + DISCONNECT; else give up on the link (`_drop`)."""
        client = self._client
        if client is None:
            return
        if not clean:
            await self._drop()
            return
        self._client = None
        try:
            status = build_status(self.site, "offline", version=self.version, reason="shutdown")
            await client.publish(
                self.status_topic, status, qos=1, retain=True, timeout=self.spec.publish_timeout
            )
            await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, OSError) as exc:
            log.info("could not say goodbye to MQTT broker %s: %s", self._where, exc)
            await self._end(client)

    # -- internals ---------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.spec.host}:{self.spec.port}"

    async def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        client = self._client
        if client is None:
            raise UplinkError(f"not connected to MQTT broker {self._where}")
        try:
            await client.publish(
                topic, payload, qos=1, retain=retain, timeout=self.spec.publish_timeout
            )
        except aiomqtt.MqttError as exc:
            raise UplinkError(self._explain_publish(exc)) from exc

    async def _drop(self) -> None:
        """Give up on a link that failed, through aiomqtt's public API only.

        aiomqtt has no public way to close the socket without a DISCONNECT (which makes the
        broker discard the will), so the "offline" status the will carries (reason "lost")
        is published here first, QoS 0 and retained, then the client exits (DISCONNECT).
        On a dead link neither gets through and the broker fires the will itself when it
        notices; on a stalled one (a frozen broker) both are queued behind the unacked
        messages and take effect when it resumes. Waits at most DROP_WAIT seconds.
        """
        client, self._client = self._client, None
        if client is None:
            return
        lost = build_status(self.site, "offline", version=self.version, reason="lost")
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            # also retrieves the disconnection error aiomqtt keeps (no "never retrieved")
            await client.publish(self.status_topic, lost, qos=0, retain=True, timeout=DROP_WAIT)
        await self._end(client)

    @staticmethod
    async def _end(client: aiomqtt.Client) -> None:
        """Exit the client (DISCONNECT if the socket is up; paho then closes it), bounded."""
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            async with asyncio.timeout(DROP_WAIT):
                await client.__aexit__(None, None, None)

    def _connect_error(self, exc: aiomqtt.MqttError) -> UplinkError:
        cause = exc.__cause__ or exc.__context__
        refused = _tls_refusal(cause) if isinstance(cause, OSError) else _rc(exc) in _REFUSED_RC
        return (UplinkRefused if refused else UplinkError)(self._explain_connect(exc))

    def _explain_os(self, exc: OSError) -> str:
        where = self._where
        if isinstance(exc, ssl.SSLCertVerificationError):
            tls = self.spec.tls
            ca = f"uplink.ca_file ({tls.ca_file})" if tls and tls.ca_file else "the system CAs"
            return (
                f"TLS: MQTT broker {where} presented a certificate that {ca} does not verify "
                f"({exc.verify_message}); set uplink.ca_file to the CA that signed the broker's "
                "certificate, and check the host name"
            )
        if isinstance(exc, ssl.SSLError):
            return (
                f"TLS handshake with MQTT broker {where} failed: {exc.reason or exc}; check that "
                "the port speaks TLS and, if the broker requires a client certificate, "
                "uplink.cert_file/key_file"
            )
        if self._tls is not None and isinstance(exc, ConnectionResetError | ssl.SSLEOFError):
            # the TCP connect succeeded (or it would be "refused"): the handshake was cut off
            return (
                f"TLS handshake with MQTT broker {where} failed: {os_cause(exc)} by the broker; "
                "check that the port speaks TLS"
            )
        return f"cannot reach MQTT broker {where}: {os_cause(exc)}"

    def _explain_connect(self, exc: aiomqtt.MqttError) -> str:
        where = self._where
        cause = exc.__cause__ or exc.__context__
        if str(exc) == "Operation timed out":  # aiomqtt's wait for the CONNACK
            limit = self.spec.publish_timeout
            hint = ""
            tls = self.spec.tls
            if tls is not None and tls.cert_file is None:
                # TLS 1.3: a broker that requires a client certificate drops the session after
                # the handshake, and the client sees no CONNACK rather than a TLS error
                hint = (
                    "; the TLS session has no client certificate: if the broker requires one, "
                    "set uplink.cert_file/key_file"
                )
            return f"cannot reach MQTT broker {where}: no CONNACK within {limit:g} s{hint}"
        if isinstance(cause, OSError):
            return self._explain_os(cause)
        if _rc(exc) in (4, 5, 134, 135):
            what = "not authorised" if _rc(exc) in (5, 135) else "bad user name or password"
            return (
                f"MQTT broker {where} refused the login: {what} ({exc}); check the username "
                "and password files (uplink.username_file / password_file or the credentials)"
            )
        if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc is not None:
            return f"MQTT broker {where} refused the connection: {exc}"
        text = _ERRNO.sub("", str(exc)).strip() or type(exc).__name__
        if "Name or service not known" in text or "not known" in text:
            return f"cannot reach MQTT broker {where}: host name not found"
        return f"cannot reach MQTT broker {where}: {text[:1].lower() + text[1:]}"

    def _explain_publish(self, exc: aiomqtt.MqttError) -> str:
        where = self._where
        text = str(exc)
        if text == "Operation timed out":
            return (
                f"MQTT broker {where} did not acknowledge a message within "
                f"{self.spec.publish_timeout:g} s"
            )
        cause = exc.__cause__ or exc.__context__
        if _rc(exc) in _GONE_RC:
            # paho only knows the socket is gone; the reconnect attempt names the real cause
            text = "the connection was closed or reset"
        elif isinstance(cause, OSError):
            text = os_cause(cause)
        return f"lost connection to MQTT broker {where}: {text}"


def _tls_refusal(exc: OSError) -> bool:
    """A TLS failure that retrying soon cannot fix (not an EOF from a broker going away)."""
    return isinstance(exc, ssl.SSLError) and not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError
    )


async def subscribe(
    host: str, port: int, topic_filter: str, *, ca_file: str | None = None
) -> AsyncIterator[tuple[str, bytes]]:
    """(topic, payload) of every QoS 1 message on topic_filter; reconnects after 1 s."""
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    while True:
        try:
            async with aiomqtt.Client(host, port, tls_context=tls) as client:
                await client.subscribe(topic_filter, qos=1)
                async for m in client.messages:
                    if isinstance(m.payload, bytes):
                        yield str(m.topic), m.payload
        except aiomqtt.MqttError as exc:
            log.warning("consumer: MQTT broker %s:%d: %s; retrying", host, port, exc)
            await asyncio.sleep(1.0)
