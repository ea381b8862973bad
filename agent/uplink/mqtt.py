"""MQTT uplink over aiomqtt (the only module that imports it): QoS 1, retained status, will.

Every aiomqtt/paho error is translated here, once, into agent.uplink.contract.UplinkError with a
message an installer can act on ("cannot reach MQTT broker 127.0.0.1:1883: connection
refused").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator

import aiomqtt

from agent import __version__
from agent.core.model import SiteSpec, UplinkSpec
from agent.uplink.contract import UplinkError
from agent.uplink.payload import build_status

__all__ = ["MqttUplink", "UplinkError", "tls_context"]

log = logging.getLogger(__name__)

_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


def _close_sockets_in(exc: BaseException) -> None:
    """Close sockets that paho left open when its connect failed.

    When a TLS handshake fails inside paho's `_create_socket`, paho raises without closing
    the socket it just wrapped; the socket then lives on in the traceback and is only
    finalised (with a ResourceWarning) whenever the error is collected. Each failed attempt
    would hold a file descriptor until then, so close them here.
    """
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        tb = chain.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                if isinstance(value, socket.socket):
                    with contextlib.suppress(OSError):
                        value.close()
            tb = tb.tb_next
        chain = chain.__cause__ or chain.__context__


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
        self._tls = tls if tls is not None else tls_context(spec)
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
        )
        self._client = client
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            self._drop()
            _close_sockets_in(exc)
            raise UplinkError(self._explain_connect(exc)) from exc
        except OSError as exc:  # e.g. a TLS handshake failure raised past aiomqtt
            self._drop()
            _close_sockets_in(exc)
            raise UplinkError(self._explain_os(exc)) from exc
        except BaseException:  # cancelled mid-handshake: leave no half-open socket behind
            self._drop()
            raise
        status = build_status(self.site, "online", version=self.version, reason="connected")
        try:
            await self._publish(self.status_topic, status, retain=True)
        except BaseException:
            self._drop()
            raise

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish; returns after the PUBACK, or raises UplinkError after the timeout."""
        await self._publish(topic, payload, retain=False)

    async def close(self, *, clean: bool) -> None:
        """clean: retained "offline" goodbye + DISCONNECT; else drop the socket (will fires)."""
        client = self._client
        if client is None:
            return
        if not clean:
            self._drop()
            return
        try:
            status = build_status(self.site, "offline", version=self.version, reason="shutdown")
            await client.publish(
                self.status_topic, status, qos=1, retain=True, timeout=self.spec.publish_timeout
            )
            await client.__aexit__(None, None, None)
            self._client = None
        except (aiomqtt.MqttError, OSError) as exc:
            log.info("could not say goodbye to MQTT broker %s: %s", self._where, exc)
            self._drop()

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

    def _drop(self) -> None:
        """Close the socket without DISCONNECT (the broker then publishes the will)."""
        client, self._client = self._client, None
        if client is None:
            return
        paho = client._client
        with contextlib.suppress(Exception):
            paho._sock_close()
        # Mark the aiomqtt client finished and consume a stored error, so that asyncio never
        # logs "Future exception was never retrieved" for a connection we gave up on.
        for fut in (client._connected, client._disconnected):
            if fut.done():
                if not fut.cancelled():
                    fut.exception()
            else:
                fut.cancel()

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
        return f"cannot reach MQTT broker {where}: {exc}"

    def _explain_connect(self, exc: aiomqtt.MqttError) -> str:
        where = self._where
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and isinstance(cause, ssl.SSLError):
            return self._explain_os(cause)
        if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in (4, 5, 134, 135):
            return (
                f"MQTT broker {where} refused the login ({exc}); check the username and "
                "password files (uplink.username_file / password_file or the credentials)"
            )
        if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc is not None:
            return f"MQTT broker {where} refused the connection: {exc}"
        text = _ERRNO.sub("", str(exc)).strip() or type(exc).__name__
        if text == "Operation timed out":
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
        return f"lost connection to MQTT broker {where}: {text}"


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
