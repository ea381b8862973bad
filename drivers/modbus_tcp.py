"""Modbus TCP Source on pymodbus 3.16: the one place pymodbus errors become SourceErrors.

Translation (exactly once, here, always `raise ... from exc`)::

    ExceptionResponse 5, 6 (busy)                 -> SourceBusy(code)
    ExceptionResponse 4, 10, 11 (device, gateway) -> SourceDeviceFailure(code)
    other ExceptionResponse (1, 2, 3...)          -> SourceProtocolError(code)
    reply with the wrong register count           -> SourceProtocolError(code=0)
    reply with another function code (e.g. 4 or
    23 to an FC3 read)                            -> SourceProtocolError(code=0)
    undecodable reply (pymodbus's framer raised)  -> SourceProtocolError(code=0); the link is
                                                     closed quietly (no asyncio traceback)
    ModbusIOException / timeout, link still open  -> SourceTimeout
    ModbusIOException after the link dropped,
    ConnectionException, OSError, not connected   -> SourceLinkError
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

import numpy as np
import numpy.typing as npt
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.base import (
    BIT_TABLES,
    EXCEPTION_NAMES,
    Block,
    RawBlock,
    SourceLinkError,
    SourceProtocolError,
    SourceTimeout,
    exception_error,
)

__all__ = ["EXCEPTION_NAMES", "ModbusTcpSource", "quiet_pymodbus"]

# A dead unit behind a gateway must not make pymodbus close the socket the live units share.
MAX_NO_RESPONSES = 1_000_000
FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def quiet_pymodbus(level: int = logging.CRITICAL) -> None:
    """Silence pymodbus's own log lines unless someone configured its logger explicitly.

    Every failure it would log is translated and reported (once) by the agent instead.
    """
    lg = logging.getLogger("pymodbus.logging")
    if lg.level == logging.NOTSET:
        lg.setLevel(level)


class ModbusTcpSource:
    """A Modbus TCP endpoint (a device or a gateway with units behind it).

    Nagle is already off: asyncio sets TCP_NODELAY on every TCP transport it creates.
    """

    def __init__(self, host: str, port: int, timeout: float, retries: int, name: str) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.name = name
        self._client: AsyncModbusTcpClient | None = None
        self._garbled: str | None = None  # why the last link was closed for an undecodable reply
        quiet_pymodbus()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def endpoint(self) -> str:
        return f"Modbus TCP {self.host}:{self.port} (bus {self.name!r})"

    async def connect(self) -> None:
        """Open the link (a no-op when open) or raise SourceLinkError with installer advice."""
        if self.connected:
            return
        await self.close()  # a fresh client per connection: no stale transaction state
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            name=self.name,
            timeout=self.timeout,
            retries=self.retries,
            reconnect_delay=0,  # we own reconnecting (the poller's backoff)
        )
        client.set_max_no_responses(MAX_NO_RESPONSES)
        self._guard(client)
        started = time.monotonic()
        ok = await client.connect()
        if ok and client.connected:
            self._client = client
            return
        client.close()
        reason = await self._diagnose(time.monotonic() - started)
        raise SourceLinkError(
            f"cannot connect to {self.endpoint}: {reason} — check the address, the port "
            "and that the device is powered"
        )

    async def read(self, block: Block) -> RawBlock:
        client = self._client
        if client is None or not client.connected:
            raise SourceLinkError(f"{self.endpoint} is not connected")
        try:
            reader = {
                "holding": client.read_holding_registers,
                "input": client.read_input_registers,
                "coil": client.read_coils,
                "discrete": client.read_discrete_inputs,
            }[block.table]
            reply = await reader(block.address, count=block.count, device_id=block.unit_id)
        except ModbusIOException as exc:
            garbled, self._garbled = self._garbled, None
            if garbled is not None:
                raise SourceProtocolError(
                    0, f"{self._where(block)}: undecodable reply ({garbled}); reconnecting"
                ) from exc
            if not client.connected:
                raise SourceLinkError(f"{self.endpoint}: link lost during read") from exc
            raise SourceTimeout(
                f"{self._where(block)}: no answer ({self.retries + 1} attempt(s) "
                f"of {self.timeout:g} s)"
            ) from exc
        except (ConnectionException, OSError) as exc:
            raise SourceLinkError(f"{self.endpoint}: link lost ({exc})") from exc
        except ModbusException as exc:
            raise SourceProtocolError(0, f"{self._where(block)}: bad reply ({exc})") from exc
        t_wall = time.time()
        t_mono = time.monotonic()
        return RawBlock(block, self._registers(block, reply), t_wall, t_mono)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _guard(self, client: AsyncModbusTcpClient) -> None:
        """Undecodable bytes make pymodbus's framer raise inside `data_received`, which asyncio
        reports with a traceback before it drops the link. Catch that here instead: close the
        link (as asyncio would), fail the pending read at once, and let read() report it as
        one protocol error."""
        ctx = client.ctx
        decode = ctx.callback_data

        def callback_data(data: bytes, addr: tuple[str, int] | None = None) -> int:
            try:
                return decode(data, addr)
            except ModbusException as exc:
                self._garbled = str(exc).removeprefix("Modbus Error: ")
                future = ctx.response_future
                if not future.done():
                    future.set_exception(ModbusIOException(self._garbled))
                ctx.close()
                return len(data)

        ctx.callback_data = callback_data  # type: ignore[method-assign]

    def _registers(self, block: Block, reply: ModbusPDU) -> npt.NDArray[np.uint16]:
        want = FUNCTION_CODE[block.table]
        if reply.function_code & 0x7F != want:
            raise SourceProtocolError(
                0,
                f"{self._where(block)}: reply with function code {reply.function_code} to a "
                f"function {want} request; refused",
            )
        if reply.isError():
            raise exception_error(int(getattr(reply, "exception_code", 0)), self._where(block))
        if block.table in BIT_TABLES:
            bits = reply.bits  # padded to whole bytes
            if len(bits) < block.count:
                raise SourceProtocolError(
                    0, f"{self._where(block)}: reply has {len(bits)} bits, asked for {block.count}"
                )
            return np.array(bits[: block.count], dtype=np.uint16)
        regs = reply.registers
        if len(regs) != block.count:
            raise SourceProtocolError(
                0, f"{self._where(block)}: reply has {len(regs)} registers, asked for {block.count}"
            )
        return np.array(regs, dtype=np.uint16)

    def _where(self, block: Block) -> str:
        return f"{self.endpoint} {block.label}"

    async def _diagnose(self, elapsed: float) -> str:
        """Why the connect failed: pymodbus returns only False, so probe once with a bare socket."""
        if elapsed >= 0.9 * self.timeout:
            return f"no answer within {self.timeout:g} s"
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout=self.timeout
            )
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except socket.gaierror as exc:
            return f"host name {self.host!r} not found ({exc.strerror})"
        except ConnectionRefusedError:
            return "connection refused"
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "host or network unreachable"
            return exc.strerror or str(exc)
        writer.close()
        await writer.wait_closed()
        return "connection failed (a second attempt got through; the link may be flaky)"
