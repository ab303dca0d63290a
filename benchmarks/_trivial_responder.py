"""The floor for benchmarks/edge_latency.py: an asyncio HTTP/1.1 responder that reads each
request (head + Content-Length body) and answers a fixed small OIP response. No routing, no
decoding, no inference: what any Python server must at least spend.

Two floors: `--streams`, asyncio streams on the default event loop (the plainest "trivial
asyncio responder"), and the default, an `asyncio.Protocol` on uvloop (the loop uvicorn runs
`strato edge serve` on): the least a Python server on that loop can spend.

    python benchmarks/_trivial_responder.py --port 8111 [--streams]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

ANSWER = b'{"model_name":"floor","model_version":"1","outputs":[]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
    + ANSWER
)


class Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", port)
    print(f"floor responder on {port}", flush=True)
    async with server:
        await server.serve_forever()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve_streams(port: int) -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", port, limit=1 << 20)
    print(f"floor responder (streams) on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", action="store_true", help="asyncio streams, default loop")
    args = parser.parse_args()
    if args.streams:
        asyncio.run(serve_streams(args.port))
        return
    try:
        import uvloop  # the loop uvicorn runs strato edge serve on, when installed

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
