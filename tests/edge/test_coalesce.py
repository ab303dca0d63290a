"""The coalescing transport: the writes of one loop step leave as one, close flushes first.
Over a real socket pair on a real event loop."""

from __future__ import annotations

import asyncio
import socket

from strato_edge.coalesce import CoalescingTransport


def test_writes_of_one_step_arrive_together_and_close_flushes():
    async def main() -> tuple[bytes, bytes, bool]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        wrapped = CoalescingTransport(transport, loop)  # type: ignore[arg-type]
        theirs.setblocking(False)
        wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        wrapped.write(b"{}")
        try:
            early = theirs.recv(100)  # nothing yet: still in the same loop step
        except BlockingIOError:
            early = b""
        await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        first = theirs.recv(100)
        wrapped.write(b"last")
        wrapped.close()  # flushes before closing
        await asyncio.sleep(0.05)
        last = theirs.recv(100)
        theirs.close()
        return early, first + b"|" + last, wrapped.is_closing()

    early, seen, closing = asyncio.run(main())
    assert early == b""
    assert seen == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}|last"
    assert closing
