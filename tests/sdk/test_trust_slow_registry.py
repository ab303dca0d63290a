"""Issue 10 review: an S3 registry that answers slowly forever must not hold a pull forever.

botocore's defaults (60 s per read, five attempts) held a pull five minutes per request on an
endpoint that accepts and says nothing, and one that trickles a byte at a time never ended (a
read of a 1 MiB chunk waits for all of it). Real boto3 against real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from strato import Registry, Unavailable

pytestmark = pytest.mark.timeout(90)

LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>slow</Name>'
    b"<Prefix>reg/tiny/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>"
    b"<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>"
    b"<CommonPrefixes><Prefix>reg/tiny/1/</Prefix></CommonPrefixes></ListBucketResult>"
)


@contextlib.contextmanager
def _endpoint(trickle: bool) -> Iterator[str]:
    """An "S3" endpoint that reads each request and then says nothing; or (`trickle`) one
    that lists `tiny:1` and answers HEAD, then sends an object one byte every 0.2 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def answer(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                request = conn.recv(65536)
                if not trickle or not request:
                    break
                if request.startswith(b"GET /slow?list-type=2") or request.startswith(b"HEAD"):
                    body = LISTING if request.startswith(b"GET") else b""
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    conn.sendall(body)  # HEAD: no body (Content-Length 0 is what it says)
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while not stop.is_set():  # GetObject: a byte every 0.2 s
                    conn.sendall(b"{")
                    time.sleep(0.2)
            stop.wait()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = server.accept()
                held.append(conn)
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickle"])
def test_a_pull_from_a_stalling_s3_registry_times_out(tmp_path, monkeypatch, trickle):
    monkeypatch.setenv("STRATO_S3_TIMEOUT_S", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with _endpoint(trickle) as url:
        monkeypatch.setenv("STRATO_S3_ENDPOINT", url)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="cut off" if trickle else None):
            Registry("s3://slow/reg").download("tiny:1", tmp_path / "dev" / "tiny" / "1")
        took = time.monotonic() - started
    assert took < 30, f"the pull waited {took:.0f} s on a stalling registry"
    assert not (tmp_path / "dev").exists()
