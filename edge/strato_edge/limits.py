"""What one slow or hostile client may hold of the edge daemon: uvicorn's httptools protocol with
limits on request heads and connections.

uvicorn (0.3x) bounds neither the size nor the count of request headers, nor how long a client
may take to send them: eight unfinished 48 MiB headers held 384 MB, and 20,000 half-open
connections used up the file descriptors (the store watcher died with "too many open files").
This protocol adds, per connection:

- a head budget (`max_header_bytes` for the request line plus headers, `max_headers`): past it
  the client gets `431 {"error": ...}` and the connection closes, having buffered at most one
  read beyond the budget;
- a head deadline (`header_timeout_s`, from the first byte of a request, or from connecting, to
  its last header): then `408` and close; idle keep-alive connections close after
  `keep_alive_s` (uvicorn's own timer);
- a cap on open connections (`max_connections`): a new connection past it closes the oldest one
  that is idle or still sending its head, so `/v2/health/*` keeps answering while slow clients
  crowd the port; when every connection is busy with a request, the newcomer is closed instead.

The body of a request is bounded by the server (`max_body_bytes`, and the request deadline).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato import serving
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

    from strato_edge.config import ServeConfig

__all__ = ["ConnectionLimits", "LimitedHttpToolsProtocol", "limited_protocol"]

_FD_RESERVE = 128  # descriptors kept for models, the store watcher, logs, side ports


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits `LimitedHttpToolsProtocol` enforces (from `ServeConfig`)."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, config: ServeConfig) -> ConnectionLimits:
        """The config's limits, the connection cap kept below this process's descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = config.max_connections
        if soft != resource.RLIM_INFINITY:
            cap = max(8, min(cap, soft - _FD_RESERVE))
        return cls(config.max_header_bytes, config.max_headers, config.header_timeout_s, cap)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that broke a limit."""


def _answer(status: int, reason: str, message: str) -> bytes:
    body = serving.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with `limits` (a subclass per server: see `limited_protocol`)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for, or reading, a request head
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None
        self._opened_at = 0.0

    # --- connections ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened_at = self.loop.time()
        self._arm_head_timer()  # a client that connects and says nothing is dropped too
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        waiting = [
            c
            for c in self.connections
            if c is not self and isinstance(c, LimitedHttpToolsProtocol) and c._evictable()
        ]
        if not waiting:
            self.transport.close()  # every connection is running a request: refuse this one
            return
        oldest = min(waiting, key=lambda c: c._opened_at)
        oldest.transport.close()

    def _evictable(self) -> bool:
        idle = self.cycle is None or self.cycle.response_complete
        return self._in_head and idle and not self.pipeline and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    # --- the head ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Still in a head after this read: all of it was head bytes, buffered by the parser.
        self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request head is over {self.limits.max_header_bytes} bytes",
            )
        elif self._head_timer is None:
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._header_count = True, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            message = f"more than {self.limits.max_headers} request headers"
            self._refusal = _answer(431, "Request Header Fields Too Large", message)
            raise _HeadRefused(message)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._in_head = True  # the next head may come; uvicorn's keep-alive timer runs now
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error here, a callback's refusal included; a request the
        # parser refuses (duplicate Content-Length, Transfer-Encoding with Content-Length, a
        # folded header, a bare LF) gets the daemon's JSON error, not uvicorn's plain text.
        refusal = self._refusal or _answer(400, "Bad Request", "malformed HTTP request")
        self.transport.write(refusal)
        self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._refusal = _answer(status, reason, message)
        self.send_400_response(message)

    # --- the head deadline ---------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if not (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()  # a pipelined head behind a running request: wait for it
            return
        if self._head_bytes == 0 and self.cycle is not None:
            self.transport.close()  # idle after a response: nothing to answer
            return
        seconds = self.limits.header_timeout_s
        self._refuse(408, "Request Timeout", f"request headers not received within {seconds:g} s")


def limited_protocol(config: ServeConfig) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for uvicorn's `http=` carrying `config`'s limits."""
    limits = ConnectionLimits.of(config)
    return type("EdgeHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
