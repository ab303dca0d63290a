"""`Edge`'s own HTTP/1.1: keep-alive reuse, the stale-connection retry and when it must not
happen, framing (Content-Length, chunked, to-close), Unix sockets, against scripted socket
servers on 127.0.0.1 and the real daemon."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from strato import AsyncEdge, ConfigError, Edge, InferRequest, Local, Timeout, Unavailable
from strato._codec import HEADER_LENGTH, decode_request, encode_response
from strato._http11 import Endpoint

pytestmark = pytest.mark.timeout(120)

Reply = Callable[[socket.socket, bytes, int], bool]  # (conn, request, n) -> keep the connection?


def read_request(conn: socket.socket) -> bytes | None:
    """One whole request (head + Content-Length body), or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class ScriptedServer:
    """Accepts connections on 127.0.0.1 (or a Unix socket); `reply` answers each request."""

    def __init__(self, reply: Reply, uds: Path | None = None) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        if uds is None:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(uds))
            self.sock.listen()
            self.url = f"unix://{uds}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while (request := read_request(conn)) is not None:
                self.requests.append(request)
                if not self.reply(conn, request, len(self.requests)):
                    return

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = b'{"name": "tiny"}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(reply: Reply, uds: Path | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(reply, uds))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_one_connection_serves_many_calls(scripted):
    server = scripted(lambda conn, request, n: conn.sendall(ok()) or True)
    with Edge(server.url) as edge:
        for _ in range(5):
            assert edge.metadata("tiny") == {"name": "tiny"}
    assert server.connections == 1 and len(server.requests) == 5


def test_a_stale_keep_alive_connection_costs_a_retry_not_an_error(scripted):
    # Answers, then closes without saying so (what uvicorn does to an idle keep-alive).
    server = scripted(lambda conn, request, n: conn.sendall(ok()) and False)
    with Edge(server.url) as edge:
        assert edge.metadata("tiny") == {"name": "tiny"}
        time.sleep(0.05)  # the close reaches us; the next call finds out only when it reads
        assert edge.metadata("tiny") == {"name": "tiny"}
        assert edge._pool.retried == 1
    assert server.connections == 2 and len(server.requests) == 2  # each request served once


def test_idle_connections_are_checked_before_reuse(scripted, monkeypatch):
    import strato._http11 as http11

    monkeypatch.setattr(http11, "IDLE_CHECK_S", 0.0)  # every reuse counts as long idle
    server = scripted(lambda conn, request, n: conn.sendall(ok()) and False)
    with Edge(server.url) as edge:
        edge.metadata("tiny")
        time.sleep(0.05)
        edge.metadata("tiny")
        assert edge._pool.retried == 0  # the closed socket was seen and dropped, not written to
    assert server.connections == 2


def test_no_retry_once_a_response_has_begun(scripted):
    def half(conn: socket.socket, request: bytes, n: int) -> bool:
        if n == 1:
            conn.sendall(ok())
            return True
        conn.sendall(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"trunc')
        return False

    server = scripted(half)
    with Edge(server.url) as edge:
        edge.metadata("tiny")
        with pytest.raises(Unavailable, match="mid-body"):
            edge.metadata("tiny")
    assert len(server.requests) == 2  # the cut answer was not sent again


def test_no_retry_on_a_fresh_connection(scripted):
    server = scripted(lambda conn, request, n: False)  # reads the request, closes, no answer
    with Edge(server.url) as edge, pytest.raises(Unavailable, match="closed"):
        edge.metadata("tiny")
    assert len(server.requests) == 1


def test_chunked_and_read_to_close_bodies(scripted):
    def reply(conn: socket.socket, request: bytes, n: int) -> bool:
        if n != 2:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b'5\r\n{"nam\r\n9;x=y\r\ne": "tiny\r\n2\r\n"}\r\n0\r\n\r\n'
            )
            return True
        conn.sendall(b'HTTP/1.0 200 OK\r\n\r\n{"name": "old"}')
        return False

    server = scripted(reply)
    with Edge(server.url) as edge:
        assert edge.metadata("tiny") == {"name": "tiny"}
        assert edge.metadata("tiny") == {"name": "old"}
        assert edge.metadata("tiny") == {"name": "tiny"}  # to-close answers are never reused
    assert server.connections == 2


def test_garbage_and_timeouts_are_typed(scripted):
    server = scripted(lambda conn, request, n: conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n") and False)
    with Edge(server.url) as edge, pytest.raises(Unavailable, match="status line"):
        edge.metadata("tiny")
    silent = scripted(lambda conn, request, n: time.sleep(1.0) or False)
    with Edge(silent.url, timeout=0.2) as edge, pytest.raises(Timeout, match=r"0\.2s"):
        edge.metadata("tiny")


def test_binary_request_bytes_are_what_the_codec_decodes(scripted, tiny_registry, digit_batch):
    """The views gathered by sendmsg make one well-formed binary OIP body."""
    local = Local(tiny_registry)

    def infer(conn: socket.socket, request: bytes, n: int) -> bool:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = dict(
            line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
        )
        decoded = decode_request(body, header_length=int(lines[HEADER_LENGTH.lower().encode()]))
        answer = local.infer(InferRequest("tiny", decoded.inputs))
        payload, length = encode_response(
            answer.outputs, model_name="tiny", model_version="2", binary=decoded.binary_default
        )
        conn.sendall(
            f"HTTP/1.1 200 OK\r\n{HEADER_LENGTH}: {length}\r\n"
            f"x-strato-model-version: 2\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        return True

    server = scripted(infer)
    strided = np.asfortranarray(digit_batch)  # not C-contiguous: must be laid out first
    with Edge(server.url) as edge:
        answer = edge.infer(InferRequest("tiny", {"input": strided}, id="r1"))
    expected = local.infer(InferRequest("tiny", {"input": digit_batch}))
    np.testing.assert_allclose(answer.outputs["logits"], expected.outputs["logits"], rtol=1e-6)
    assert answer.model_version == "2" and answer.outputs["logits"].flags.writeable
    assert b"POST /v2/models/tiny/infer HTTP/1.1" in server.requests[0]
    local.close()


def test_unix_socket_url(scripted, tmp_path):
    server = scripted(lambda conn, request, n: conn.sendall(ok()) or True, uds=tmp_path / "e.sock")
    with Edge(server.url) as edge:
        assert edge.metadata("tiny") == {"name": "tiny"}
        assert edge.endpoint.is_local
    assert b"host: localhost" in server.requests[0]


def test_urls():
    assert Endpoint.parse("unix:///run/strato.sock").uds == "/run/strato.sock"
    assert Endpoint.parse("http://[::1]:8000/base").authority == "[::1]:8000"
    assert Endpoint.parse("http://[::1]:8000/base").prefix == "/base"
    assert not Endpoint.parse("http://10.0.0.2:8000").is_local
    for bad in ("ftp://x", "unix://", "http://h:notaport"):
        with pytest.raises(ConfigError):
            Edge(bad)


def test_the_daemon_closing_an_idle_connection_is_invisible(edge_daemon, digit_batch):
    """uvicorn drops keep-alive connections idle for 5 s; the next call just works."""
    with Edge(edge_daemon.url) as edge:
        edge.infer(InferRequest("tiny", {"input": digit_batch}))
        time.sleep(5.5)
        answer = edge.infer(InferRequest("tiny", {"input": digit_batch}))
        assert answer.outputs["logits"].shape == (4, 10)
        assert edge._pool.opened == 2


def test_async_edge_stale_connection_and_unix_socket(scripted, tmp_path):
    closing = scripted(lambda conn, request, n: conn.sendall(ok()) and False)
    unix = scripted(lambda conn, request, n: conn.sendall(ok()) or True, uds=tmp_path / "a.sock")

    async def main() -> None:
        edge = AsyncEdge(closing.url)
        try:
            assert await edge.metadata("tiny") == {"name": "tiny"}
            await asyncio.sleep(0.05)
            assert await edge.metadata("tiny") == {"name": "tiny"}
        finally:
            await edge.aclose()
        local = AsyncEdge(unix.url)
        try:
            answers = await asyncio.gather(*(local.metadata("tiny") for _ in range(4)))
            assert answers == [{"name": "tiny"}] * 4
        finally:
            await local.aclose()
        silent = AsyncEdge(scripted(lambda c, r, n: time.sleep(1) or False).url, timeout=0.2)
        with pytest.raises(Timeout):
            await silent.metadata("tiny")
        await silent.aclose()

    asyncio.run(main())
    assert len(closing.requests) == 2


def test_remembered_heads_and_plans_follow_each_signature(edge_daemon, session_registry):
    """Request heads and response plans are reused per signature; every answer stays right as
    shapes, versions, ids and byte order change between calls."""
    rng = np.random.default_rng(3)
    local = Local(session_registry)
    with Edge(edge_daemon.url) as edge:
        for rows, version, request_id, order in [
            (4, None, None, "<"), (1, None, None, "<"), (4, None, None, ">"), (4, "2", None, "<"),
            (4, None, "abc", "<"), (4, None, None, "<"), (1, "2", None, "<"),
        ]:  # fmt: skip
            batch = rng.random((rows, 1, 28, 28), dtype=np.float32).astype(f"{order}f4")
            answer = edge.infer(InferRequest("tiny", {"input": batch}, version, request_id))
            ref = "tiny:2" if version else "tiny@prod"
            expected = local.infer(InferRequest(ref, {"input": batch.astype(np.float32)}))
            np.testing.assert_allclose(
                answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5, atol=1e-5
            )
            assert answer.model_version == (version or "1") and answer.id == request_id
            assert answer.outputs["logits"].shape == (rows, 10)
        assert len(edge._requests._heads) == 5 and len(edge._responses._plans) == 4
    local.close()


def test_a_body_bigger_than_the_socket_buffer_arrives_whole(scripted):
    """8 MB does not fit one sendmsg: the rest is sent from where the kernel stopped."""
    x = np.random.default_rng(5).random((1, 2, 1024, 1024), dtype=np.float32)  # 8 MiB
    server = scripted(lambda conn, request, n: conn.sendall(ok()) or True)
    with Edge(server.url, timeout=30) as edge:
        parts = edge._infer_parts(InferRequest("big", {"input": x}))
        assert edge._exchange(parts, 30).status == 200
    assert server.requests[0] == b"".join(bytes(part) for part in parts)
    assert server.requests[0].endswith(x.tobytes())
