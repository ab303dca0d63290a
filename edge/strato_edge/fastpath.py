"""`POST /v2/models/{model}[/versions/{version}]/infer` on raw ASGI, in front of Starlette.

The inference route is nearly every request a daemon answers. Through Starlette it paid for
route matching over every route, a `Request`, header objects, a `Response` and its header
rendering, none of it inference (see docs/edge.md, "The data path", for the measurements).
Here the path is split once, the headers read in one pass over the ASGI list, the body taken
from the first `http.request` message without a join when it is whole, and the answer sent
as two ASGI messages with prebuilt header tuples. Everything else the route does (token,
model-name check, body limits, shared memory, the batcher, the deadline, metrics, the error
mapping) is `EdgeServer`'s own code, so both paths answer alike; any other request, and any
infer path that does not parse, goes to Starlette.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from strato import InvalidInput, PayloadTooLarge, serving

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from strato_edge.config import ServeConfig
    from strato_edge.device_store import ModelStore, ServedModel

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["InferFastPath", "InferHost", "parse_infer_path"]


class InferHost(Protocol):
    """What the fast path needs of the server it fronts (`EdgeServer`): a protocol, so the two
    modules do not import each other."""

    config: ServeConfig
    store: ModelStore

    def _authorize(self, headers: dict[str, str]) -> None: ...

    async def answer(
        self, served: ServedModel, body: bytes, header_length: int | None, client: Any
    ) -> serving.Answer:
        """Decode, run and encode one OIP request for `served`."""

    def _count(self, served: ServedModel | None, status: int, seconds: float) -> None: ...


log = logging.getLogger("strato.edge.server")

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"
_JSON = [(b"content-type", b"application/json")]
_BINARY = b"application/octet-stream"


def parse_infer_path(path: str) -> tuple[str, str | None] | None:
    """(model, version) of an OIP infer path, or None when it is not one."""
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    middle = path[len(_PREFIX) : -len(_SUFFIX)]
    model, sep, rest = middle.partition("/")
    if not model:
        return None
    if not sep:
        return model, None
    marker, _, version = rest.partition("/")
    if marker != "versions" or not version or "/" in version:
        return None
    return model, version


class InferFastPath:
    """An ASGI app: inference requests here, the rest to `app` (Starlette)."""

    def __init__(self, app: Any, edge: InferHost) -> None:
        self.app: ASGIApp = app
        self.state = app.state  # what the runner and tests read (`app.state.edge`)
        self.edge = edge
        self._model_headers: dict[tuple[str, str, str], list[tuple[bytes, bytes]]] = {}
        self._checked: set[tuple[str, str | None]] = set()  # names that passed the check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = parse_infer_path(scope["path"])
            if target is not None:
                await self._infer(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None
    ) -> None:
        edge = self.edge
        started = time.perf_counter()
        served: ServedModel | None = None  # unknown model names never become metric labels
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            edge._authorize(headers)
            if (model, version) not in self._checked:  # `..` and friends never reach the disk
                serving.check_model_name(model, version)
                if len(self._checked) < 1024:  # bounded: junk names are re-checked, not kept
                    self._checked.add((model, version))
            served = await edge.store.get(model, version)
            body = await self._timed_body(receive, headers)
            header_length = serving.header_length_from(headers)
            answer = await edge.answer(served, body, header_length, scope.get("client"))
            status, response_headers, payload = 200, self._headers(answer, served), answer.body
        except Exception as exc:
            status, document = serving.error_answer(exc)
            if status == 500:
                log.error("unexpected error", exc_info=exc)
            payload = serving.dumps(document)
            response_headers = [*_JSON, (b"content-length", b"%d" % len(payload))]
        edge._count(served, status, time.perf_counter() - started)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _timed_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        # A slow body holds a connection and a buffer: it gets the request deadline too.
        seconds = self.edge.config.timeout_s
        if sys.version_info >= (3, 11):  # asyncio.timeout spares wait_for's extra task
            async with asyncio.timeout(seconds):
                return await self._body(receive, headers)
        return await asyncio.wait_for(self._body(receive, headers), seconds)

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.edge.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidInput(f"Content-Length must be an integer, got {declared!r}")
            if int(declared) > limit:
                raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body  # the whole body in one message: no copy
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # counted too: a chunked body has no Content-Length
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _headers(self, answer: serving.Answer, served: ServedModel) -> list[tuple[bytes, bytes]]:
        key = (served.name, served.version, served.precision)
        common = self._model_headers.get(key)
        if common is None:
            common = self._model_headers[key] = [
                (b"x-strato-model-version", served.version.encode("latin-1")),
                (b"x-strato-precision", served.precision.encode("latin-1")),
            ]
        length = (b"content-length", b"%d" % len(answer.body))
        if answer.header_length is None:
            return [*_JSON, length, *common]
        return [
            (b"content-type", _BINARY),
            (b"inference-header-content-length", b"%d" % answer.header_length),
            length,
            *common,
        ]
