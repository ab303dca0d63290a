"""Issue 10, item 8: what slow or hostile clients can hold of the edge daemon, over real sockets.

Each test reproduces an attack that worked on uvicorn's defaults: unbounded request heads (eight
unfinished 48 MiB headers grew the daemon by 384 MB), heads that never finish, and thousands of
half-open connections (file descriptors ran out and the store watcher died).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import free_port

pytestmark = pytest.mark.timeout(180)

STRATO = str(Path(sys.executable).parent / "strato")


def _recv_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a socket timeout fails the test)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_too_many_headers_get_431(tiny_server):
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
    head += b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = _recv_all(sock)
    assert _status(answer) == 431 and b'"error"' in answer
    with tiny_server.client() as http:
        assert http.get("/v2/health/live").status_code == 200


def test_a_huge_header_gets_431_after_the_budget_not_after_the_header(tiny_server):
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, chunk = 0, b"a" * (64 << 10)
        try:
            while sent < (16 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _recv_all(sock) if sent < (16 << 20) else b""
    assert sent < (16 << 20), "the server kept reading a 16 MiB header"
    assert answer == b"" or _status(answer) == 431


def test_slow_heads_time_out_with_408_and_silent_connections_close(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), header_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # ... and no end
        assert _status(_recv_all(slow)) == 408
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        assert _status(_recv_all(silent)) == 408
    with server.client() as http:
        assert http.get("/v2/health/ready").status_code == 200


def test_idle_keep_alive_connections_are_closed(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), keep_alive_s=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _recv_all(sock)  # returns once the server closes the idle connection
    assert _status(answer) == 200 and answer.endswith(b'{"live":true}')


# --- against a daemon in its own process: its RSS and file descriptors ------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _start_daemon(store: Path, log: Path, *, nofile: int | None = None, extra=()):
    port = free_port()

    def limit_fds() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = {**os.environ, "STRATO_ORT_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(STRATO, "edge", "serve", "--store", str(store), "--port", str(port)),
                *("--watch-interval", "0.2", "--log-level", "warning", *extra),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_fds,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, port, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"daemon did not start:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def test_eight_unfinished_48mib_headers_do_not_grow_the_daemon(tiny_registry, tmp_path):
    process, port, url = _start_daemon(Path(tiny_registry.url), tmp_path / "log")
    try:
        before = _rss_bytes(process.pid)
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        chunk, sent = b"a" * (1 << 20), []
        for sock in sockets:
            sock.sendall(b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\nX-Fill: ")
            total = 0
            try:
                while total < (48 << 20):
                    sock.sendall(chunk)
                    total += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sent.append(total)
        grown = _rss_bytes(process.pid) - before
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/v2/health/live").status_code == 200
        for sock in sockets:
            sock.close()
    finally:
        _stop(process)
    assert max(sent) < (48 << 20), f"the daemon read whole 48 MiB headers: {sent}"
    assert grown < (48 << 20), f"RSS grew by {grown / 2**20:.0f} MiB"


def test_thousands_of_half_open_connections_keep_health_and_the_watcher_alive(
    tiny_registry, tmp_path
):
    want = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 512), hard))
    log = tmp_path / "log"
    # 512 descriptors for the daemon: 3000 connections would use them all up six times over.
    process, port, url = _start_daemon(Path(tiny_registry.url), log, nofile=512)
    half_open: list[socket.socket] = []
    try:
        for _ in range(want):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            half_open.append(sock)
        for sock in half_open:
            with contextlib.suppress(OSError):  # the daemon may have dropped it already
                sock.send(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")  # never ends
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(20):
                assert http.get("/v2/health/live").status_code == 200
                assert http.get("/v2/health/ready").status_code == 200
            assert _open_fds(process.pid) < 512
            # the store watcher still reads the store: a promotion is served within seconds
            tiny_registry.promote("tiny", "2", "prod")
            deadline = time.monotonic() + 30
            version = ""
            while time.monotonic() < deadline and version != "2":
                version = http.get("/v2/models/tiny").headers.get("X-Strato-Model-Version", "")
                time.sleep(0.1)
            assert version == "2", log.read_text()[-2000:]
    finally:
        for sock in half_open:
            sock.close()
        _stop(process)
    assert "Too many open files" not in log.read_text()


def test_a_body_that_never_ends_gets_the_request_deadline(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), timeout_s=0.5)
    for path in (b"/v2/models/tiny/infer", b"/invocations"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST " + path + b' HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"in'
            )
            answer = b""
            while b"\r\n\r\n" not in answer:  # a socket timeout here: the server waits forever
                chunk = sock.recv(65536)
                assert chunk, "closed without an answer"
                answer += chunk
        assert _status(answer) == 504, answer
    with server.client() as http:
        assert http.get("/v2/health/ready").status_code == 200


SMUGGLING = {
    "two-content-lengths": b"Content-Length: 5\r\nContent-Length: 7\r\n\r\n{}abc12",
    "same-content-length-twice": b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "transfer-encoding-and-content-length": (
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "unknown-transfer-encoding": b"Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "folded-header": b"X-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{}",
    "negative-content-length": b"Content-Length: -1\r\n\r\n",
    "huge-content-length": b"Content-Length: 99999999999999999999\r\n\r\n",
}


@pytest.mark.parametrize("rest", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_framing_is_refused_with_a_json_400_and_the_connection_closed(tiny_server, rest):
    """Request smuggling shapes: never answered as two requests, never a plain-text page."""
    head = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=10) as sock:
        sock.sendall(head + rest)
        answer = _recv_all(sock)
    assert answer.count(b"HTTP/1.1 ") == 1 and _status(answer) == 400
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head_part and body.startswith(b'{"error":')
    with tiny_server.client() as http:
        assert http.get("/v2/health/live").status_code == 200
