"""A lean HTTP/1.1 client for one daemon: keep-alive connections over raw sockets.

`Edge` talks to one known server (`strato edge serve`), so a general-purpose HTTP client's
machinery (URL objects, header classes, event hooks, middleware) is pure overhead on its hot
path: two thirds of an edge call in the measurements of FACTS.md. Here a request is a list of
buffers handed to one `sendmsg` (no copy of the tensors), and a response is read into one
buffer sized from its `Content-Length`.

A pool holds idle connections (LIFO, so a single thread keeps reusing one warm socket).
uvicorn closes keep-alive connections idle for 5 s: a reused connection found closed before
any response byte is replaced by a fresh one and the request sent again (see `Http11Pool.request`).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    Buffer = bytes | bytearray | memoryview

__all__ = [
    "IDLE_CHECK_S",
    "ConnectionLost",
    "Endpoint",
    "Http11Connection",
    "Http11Pool",
    "Http11Response",
    "ProtocolError",
    "parse_head",
]

IDLE_CHECK_S = 1.0  # a connection idle longer than this is checked for a peer close before reuse
_READ = 65536
_MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The peer answered something that is not HTTP/1.1 we understand."""


class ConnectionLost(OSError):
    """The peer closed the connection; `before_response`: no byte of a response had arrived."""

    def __init__(self, message: str, *, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a daemon listens: TCP `host:port` (optionally TLS) or a Unix domain socket path."""

    host: str
    port: int
    uds: str | None = None
    tls: bool = False
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """`http://host:port[/prefix]`, `https://…` or `unix:///path/to/strato.sock`."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = unquote(parts.netloc + parts.path)
            if not path:
                raise ConfigError(f"{url!r}: a unix URL needs a socket path (unix:///run/x.sock)")
            return cls("localhost", 0, uds=path)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{url!r}: expected http://host:port, https://… or unix:///path")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ConfigError(f"{url!r}: {exc}") from None
        return cls(parts.hostname, port, tls=tls, prefix=parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        """The Host header's value."""
        if self.uds is not None:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """A Unix socket or a loopback address: the daemon shares this machine's memory."""
        if self.uds is not None:
            return True
        if self.host == "localhost":
            return True
        import ipaddress

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(slots=True)
class Http11Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytearray
    keep_alive: bool


def parse_head(head: bytes | bytearray) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-cased names) and HTTP/1.1-ness of a response head (no CRLFCRLF)."""
    lines = bytes(head).decode("latin-1").split("\r\n")  # one decode for the whole head
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise ProtocolError(f"bad status code in {lines[0][:80]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return status, headers, status_line[0] == "HTTP/1.1"


def keeps_alive(headers: dict[str, str], http11: bool) -> bool:
    connection = headers.get("connection", "").lower()
    return connection != "close" if http11 else connection == "keep-alive"


def content_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ProtocolError(f"bad Content-Length {raw!r}")
    return int(raw)


class Http11Connection:
    """One keep-alive socket: send buffers, read one response. Not thread-safe (a pool lends it)."""

    __slots__ = ("_buffer", "last_used", "requests", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.requests = 0
        self.last_used = time.monotonic()
        self._buffer = bytearray()

    @classmethod
    def open(cls, endpoint: Endpoint, timeout: float) -> Http11Connection:
        if endpoint.uds is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(endpoint.uds)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        return cls(sock)

    def peer_closed(self) -> bool:
        """Has the peer closed (or sent something unasked) while the connection sat idle?"""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)  # idle and readable: EOF, a reset, or garbage — unusable

    def send(self, parts: Sequence[Buffer], deadline: float) -> None:
        sock = self.sock
        sock.settimeout(_remaining(deadline))
        if isinstance(sock, ssl.SSLSocket):  # no sendmsg over TLS
            for part in parts:
                sock.sendall(part)
            return
        total = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
        sent = sock.sendmsg(parts)  # one gather; almost always all of it
        if sent == total:
            return
        views = [memoryview(part).cast("B") for part in parts]
        while views:
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]
            if not views:
                return
            sock.settimeout(_remaining(deadline))
            sent = sock.sendmsg(views)

    def _recv(self, deadline: float, received: int) -> bytes:
        self.sock.settimeout(_remaining(deadline))
        try:
            chunk = self.sock.recv(_READ)
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            raise ConnectionLost(str(exc), before_response=received == 0) from exc
        if not chunk:
            raise ConnectionLost("the server closed the connection", before_response=received == 0)
        return chunk

    def read_response(self, deadline: float, *, head_only: bool = False) -> Http11Response:
        buffer = self._buffer
        received = len(buffer)
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD:
                raise ProtocolError("response head larger than 64 KiB")
            chunk = self._recv(deadline, received)
            received += len(chunk)
            buffer += chunk
        status, headers, http11 = parse_head(buffer[:end])
        rest = memoryview(buffer)[end + 4 :]
        keep_alive = keeps_alive(headers, http11)
        length = content_length(headers)
        if head_only or status in (204, 304) or 100 <= status < 200:
            length = 0
        if length is not None:
            body = self._read_exact(length, rest, deadline)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(bytearray(rest), deadline)
        else:  # no length: the body runs to the end of the connection
            body = self._read_to_close(bytearray(rest), deadline)
            self._buffer = bytearray()
            keep_alive = False
        rest.release()
        self.requests += 1
        self.last_used = time.monotonic()
        return Http11Response(status, headers, body, keep_alive)

    def _read_exact(self, length: int, rest: memoryview, deadline: float) -> bytearray:
        if len(rest) == length:  # the whole body came with the head (a small answer): one copy
            body = bytearray(rest)
            self._buffer = bytearray()
            return body
        body = bytearray(length)
        have = min(len(rest), length)
        body[:have] = rest[:have]
        leftover = bytes(rest[have:])  # unasked bytes (a pipelined answer): kept for the next read
        view = memoryview(body)
        while have < length:
            self.sock.settimeout(_remaining(deadline))
            got = self.sock.recv_into(view[have:])
            if not got:
                raise ConnectionLost("the server closed mid-body", before_response=False)
            have += got
        view.release()
        self._buffer = bytearray(leftover)
        return body

    def _read_chunked(self, data: bytearray, deadline: float) -> bytearray:
        body = bytearray()
        while True:
            while (eol := data.find(b"\r\n")) < 0:
                data += self._recv(deadline, 1)
            size_text = bytes(data[:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            while len(data) < eol + 2 + size + 2:
                data += self._recv(deadline, 1)
            body += data[eol + 2 : eol + 2 + size]
            del data[: eol + 2 + size + 2]
            if size == 0:  # trailers are not used by OIP servers: any left are dropped
                self._buffer = bytearray()
                return body

    def _read_to_close(self, data: bytearray, deadline: float) -> bytearray:
        while True:
            try:
                data += self._recv(deadline, 1)
            except ConnectionLost:
                return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class Http11Pool:
    """Idle keep-alive connections to one endpoint; a caller borrows one per request.

    `deque.append`/`pop` are atomic, so threads share the pool without a lock; each in-flight
    request holds its own connection, and at most `max_idle` idle ones are kept.
    """

    def __init__(self, endpoint: Endpoint, *, max_idle: int = 32) -> None:
        self.endpoint = endpoint
        self.max_idle = max_idle
        self._idle: deque[Http11Connection] = deque()
        self.opened = 0  # connections made, for tests and benchmarks
        self.retried = 0  # requests re-sent after a stale keep-alive connection

    def _borrow(self, deadline: float) -> Http11Connection:
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                break
            if time.monotonic() - connection.last_used < IDLE_CHECK_S:
                return connection
            if not connection.peer_closed():
                return connection
            connection.close()
        self.opened += 1
        return Http11Connection.open(self.endpoint, _remaining(deadline))

    def _give_back(self, connection: Http11Connection, response: Http11Response) -> None:
        if response.keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def request(
        self, parts: Sequence[Buffer], deadline: float, *, head_only: bool = False
    ) -> Http11Response:
        """Send one request (its head first in `parts`) and read its response.

        A request sent on a reused connection that the server had already closed (uvicorn
        drops idle keep-alives after 5 s; the close can cross our send) is sent once more on
        a fresh connection, but only when the connection died before any byte of a response:
        then the server never started answering. It may, rarely, have read the request and
        died mid-inference; running it again is still right because inference has no side
        effects (the same input gives the same answer). A fresh connection that fails, or a
        response cut short after its first byte, is an error for the caller.
        """
        connection = self._borrow(deadline)
        reused = connection.requests > 0
        try:
            return self._exchange(connection, parts, deadline, head_only)
        except (ConnectionLost, BrokenPipeError, ConnectionResetError) as exc:
            lost_before = not isinstance(exc, ConnectionLost) or exc.before_response
            if not (reused and lost_before):
                raise
        self.retried += 1
        self.opened += 1
        connection = Http11Connection.open(self.endpoint, _remaining(deadline))
        return self._exchange(connection, parts, deadline, head_only)

    def _exchange(
        self,
        connection: Http11Connection,
        parts: Sequence[Buffer],
        deadline: float,
        head_only: bool,
    ) -> Http11Response:
        try:
            connection.send(parts, deadline)
            response = connection.read_response(deadline, head_only=head_only)
        except BaseException:
            connection.close()  # half a request or half a response: never reuse it
            raise
        self._give_back(connection, response)
        return response

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
