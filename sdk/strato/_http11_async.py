"""The async twin of `strato._http11`: keep-alive HTTP/1.1 over asyncio streams.

Same rules: a request is a list of buffers written at once, a response is read by its
`Content-Length`, and a reused connection found closed before any response byte is replaced
and the request sent again (see `Http11Pool.request` for why that is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections import deque
from typing import TYPE_CHECKING

from ._http11 import (
    ConnectionLost,
    Http11Response,
    ProtocolError,
    content_length,
    keeps_alive,
    parse_head,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._http11 import Buffer, Endpoint

__all__ = ["AsyncHttp11Connection", "AsyncHttp11Pool"]

_MAX_HEAD = 64 * 1024


class AsyncHttp11Connection:
    """One keep-alive stream pair; lent to one task at a time by `AsyncHttp11Pool`."""

    __slots__ = ("reader", "requests", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.requests = 0

    @classmethod
    async def open(cls, endpoint: Endpoint) -> AsyncHttp11Connection:
        if endpoint.uds is not None:
            reader, writer = await asyncio.open_unix_connection(endpoint.uds, limit=_MAX_HEAD)
        else:  # asyncio sets TCP_NODELAY on TCP transports itself
            context = ssl.create_default_context() if endpoint.tls else None
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=context, limit=_MAX_HEAD
            )
        return cls(reader, writer)

    @property
    def usable(self) -> bool:
        """False once the peer closed (the event loop saw the EOF while the connection idled)."""
        return not (self.reader.at_eof() or self.writer.is_closing())

    async def exchange(self, parts: Sequence[Buffer], *, head_only: bool) -> Http11Response:
        self.writer.writelines(parts)
        await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ConnectionLost(
                "the server closed the connection", before_response=not exc.partial
            ) from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("response head larger than 64 KiB") from None
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            raise ConnectionLost(str(exc), before_response=True) from exc
        status, headers, http11 = parse_head(head[:-4])
        keep_alive = keeps_alive(headers, http11)
        length = content_length(headers)
        if head_only or status in (204, 304) or 100 <= status < 200:
            length = 0
        try:
            if length is not None:
                body = bytearray(await self.reader.readexactly(length))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._read_chunked()
            else:
                body, keep_alive = bytearray(await self.reader.read()), False
        except asyncio.IncompleteReadError:
            raise ConnectionLost("the server closed mid-body", before_response=False) from None
        self.requests += 1
        return Http11Response(status, headers, body, keep_alive)

    async def _read_chunked(self) -> bytearray:
        body = bytearray()
        while True:
            line = await self.reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {line[:20]!r}") from None
            chunk = await self.reader.readexactly(size + 2)
            body += chunk[:size]
            if size == 0:
                return body

    def close(self) -> None:
        self.writer.close()


class AsyncHttp11Pool:
    """Idle keep-alive connections for one endpoint, shared by the tasks of one event loop."""

    def __init__(self, endpoint: Endpoint, *, max_idle: int = 64) -> None:
        self.endpoint = endpoint
        self.max_idle = max_idle
        self._idle: deque[AsyncHttp11Connection] = deque()
        self.opened = 0
        self.retried = 0

    async def _borrow(self) -> AsyncHttp11Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            connection.close()
        self.opened += 1
        return await AsyncHttp11Connection.open(self.endpoint)

    async def request(
        self, parts: Sequence[Buffer], timeout: float, *, head_only: bool = False
    ) -> Http11Response:
        """One request and its response within `timeout` seconds (then `TimeoutError`)."""
        if sys.version_info >= (3, 11):  # asyncio.timeout spares wait_for's extra task
            async with asyncio.timeout(timeout):
                return await self._request(parts, head_only)
        return await asyncio.wait_for(self._request(parts, head_only), timeout)

    async def _request(self, parts: Sequence[Buffer], head_only: bool) -> Http11Response:
        connection = await self._borrow()
        reused = connection.requests > 0
        try:
            return await self._exchange(connection, parts, head_only)
        except (ConnectionLost, BrokenPipeError, ConnectionResetError) as exc:
            lost_before = not isinstance(exc, ConnectionLost) or exc.before_response
            if not (reused and lost_before):
                raise
        # Stale keep-alive connection, closed before any response byte: safe to send again.
        self.retried += 1
        self.opened += 1
        connection = await AsyncHttp11Connection.open(self.endpoint)
        return await self._exchange(connection, parts, head_only)

    async def _exchange(
        self, connection: AsyncHttp11Connection, parts: Sequence[Buffer], head_only: bool
    ) -> Http11Response:
        try:
            response = await connection.exchange(parts, head_only=head_only)
        except BaseException:  # cancelled, timed out or broken mid-exchange: never reuse it
            connection.close()
            raise
        if response.keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    async def aclose(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            connection.close()
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()
