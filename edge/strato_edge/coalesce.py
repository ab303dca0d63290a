"""One segment per response: the writes of one event-loop step leave together.

uvicorn writes a response's head when the app sends `http.response.start` and its body on
`http.response.body`: two writes, so with TCP_NODELAY two segments, and a client that wakes
for the head only to wait again for the body (most batch-1 answers here, measured in
benchmarks/edge_latency.py). The transport below holds the writes of one loop step and hands
them to the real transport together at the end of the step (`writelines`, no join), so a
small answer is one segment. Closing flushes first; everything else passes through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["CoalescingTransport", "coalescing"]


class CoalescingTransport:
    """Wraps an `asyncio.Transport`; `write` is deferred to the end of the loop step."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalescing(protocol: type[Any]) -> type[Any]:
    """A subclass of a uvicorn HTTP protocol class whose transport coalesces writes."""

    def connection_made(self: Any, transport: asyncio.Transport) -> None:
        protocol.connection_made(self, transport)
        self.transport = CoalescingTransport(transport, self.loop)

    return type(protocol.__name__, (protocol,), {"connection_made": connection_made})
