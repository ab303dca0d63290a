"""The edge daemon's HTTP surface: Open Inference Protocol v2, SageMaker hosting, /metrics.

Bare Starlette (a pydantic layer halves throughput, see FACTS.md). Every body goes through
`strato.serving` (decode, encode, the error → status mapping), like the Lambda handler's; every
client mistake is a 4xx `{"error": ...}`, never a 500. Bodies over `DECODE_INLINE_BYTES` are
decoded in a thread, so one huge request never stalls the event loop for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route
from strato import InvalidInput, ModelNotFound, PayloadTooLarge, Timeout, Unauthorized, serving

from strato_edge.device_store import ModelStore
from strato_edge.fastpath import InferFastPath
from strato_edge.idempotency import AnswerCache, request_key
from strato_edge.metrics import Metrics
from strato_edge.sagemaker import (
    NotAcceptable,
    UnsupportedMediaType,
    accepted,
    as_json,
    decode_invocation,
    encode_array,
)
from strato_edge.shm import EXTENSION, SystemSharedMemory, uses_shared_memory
from strato_edge.shm_http import OFF, require_local, shm_routes
from strato_edge.triton import model_config, model_statistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from starlette.requests import Request

    from strato_edge.config import ServeConfig
    from strato_edge.device_store import ServedModel

__all__ = ["DECODE_INLINE_BYTES", "EdgeServer", "create_app"]

log = logging.getLogger("strato.edge.server")

_T = TypeVar("_T")
SAGEMAKER_TARGET = "x-amzn-sagemaker-target-model"
# SageMaker hands `invoke_endpoint(CustomAttributes=...)` to the container in this header; the
# `SageMaker` transport asks for the model's metadata with `strato-metadata` (the hosting
# contract has no metadata route of its own).
SAGEMAKER_CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
METADATA_ATTRIBUTE = "strato-metadata"
MODEL_VERSION = "X-Strato-Model-Version"
PRECISION = "X-Strato-Precision"
DECODE_INLINE_BYTES = 256 << 10  # bigger bodies decode off the event loop


async def _with_deadline(work: Coroutine[Any, Any, _T], seconds: float) -> _T:
    try:
        if sys.version_info >= (3, 11):  # asyncio.timeout spares wait_for's extra task
            async with asyncio.timeout(seconds):
                return await work
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
        raise Timeout(f"the request ran past its deadline of {seconds:g} s") from None


def _asks_for_metadata(headers: dict[str, str]) -> bool:
    attributes = headers.get(SAGEMAKER_CUSTOM_ATTRIBUTES, "")
    return METADATA_ATTRIBUTE in {part.strip() for part in attributes.replace(";", ",").split(",")}


def _header_map(request: Request) -> dict[str, str]:
    # One pass over the raw ASGI headers (names arrive lower-cased), not a scan per lookup.
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(serving.dumps(value), status, headers, media_type="application/json")


def _error(exc: BaseException) -> Response:
    status, document = serving.error_answer(exc)
    if isinstance(exc, (UnsupportedMediaType, NotAcceptable)):
        status = exc.status_code  # the SageMaker contract's 415 / 406
    if status == 500:
        log.error("unexpected error", exc_info=exc)
    return _json(document, status)


class EdgeServer:
    """Route handlers over one `ModelStore`; `create_app` wires them into Starlette."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="strato-infer")
        self.store = ModelStore(config.store, config, self.metrics, self.executor)
        self.shm = SystemSharedMemory() if config.allow_shm else None
        self.answers = AnswerCache()
        # The token's UTF-8 bytes against the header's raw bytes (decoded latin-1, so
        # `.encode("latin-1")` gives them back): a non-ASCII token matches byte for byte.
        self._token = config.token.encode("utf-8") if config.token else None

    # --- guards --------------------------------------------------------------------------
    def _authorize(self, headers: dict[str, str]) -> None:
        if self._token is None:
            return
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given_bytes = given.strip(" \t").encode("latin-1")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, self._token):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>)")

    async def _body(self, request: Request, headers: dict[str, str]) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidInput(f"Content-Length must be an integer, got {declared!r}")
            if int(declared) > limit:
                raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # counted too: a chunked body has no Content-Length
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            try:
                self._authorize(_header_map(request))
                return await handler(request)
            except Exception as exc:
                return _error(exc)

        return route

    # --- health and metadata -------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.store.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        from strato import __version__

        return _json({"name": "strato-edge", "version": __version__, "extensions": self.extensions})

    @property
    def extensions(self) -> list[str]:
        shm = [EXTENSION] if self.shm is not None else []
        return ["binary_tensor_data", "model_configuration", "statistics", *shm]

    async def model_metadata(self, request: Request) -> Response:
        served = await self._served(request)
        metadata = dict(served.metadata)
        metadata["versions"] = await asyncio.to_thread(self.store.installed, served.name)
        # How big a request may be, so clients split rows to fit rather than meet a 413.
        parameters = dict(metadata.get("parameters") or {})
        parameters["max_body_bytes"] = self.config.max_body_bytes
        metadata["parameters"] = parameters
        return _json(metadata, headers=self._model_headers(served))

    async def model_ready(self, request: Request) -> Response:
        served = await self._served(request)
        return _json(
            {"name": served.name, "version": served.version, "ready": True},
            headers=self._model_headers(served),
        )

    async def model_config(self, request: Request) -> Response:
        """Triton's model configuration extension: `GET /v2/models/{m}/config`."""
        served = await self._served(request)
        config = model_config(served, self.config.batching_for(served.name))
        return _json(config, headers=self._model_headers(served))

    async def model_stats(self, request: Request) -> Response:
        """Triton's statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats`."""
        name = request.path_params.get("model")
        version = request.path_params.get("version")
        if name is not None:
            await self._served(request)  # 404 for a model (version) that is not here
        return _json(model_statistics(self.store, self.metrics, name, version))

    async def repository_index(self, request: Request) -> Response:
        rows = [
            {"name": name, "version": version, "state": "READY"}
            for name, version in sorted(self.store.served().items())
        ]
        return _json(rows)

    async def metrics_text(self, request: Request) -> Response:
        text = self.metrics.render(self.store.queue_depth) + (
            "# HELP strato_edge_replayed_requests_total Repeated requests (same id and body) "
            "answered from the cache, not run again.\n"
            "# TYPE strato_edge_replayed_requests_total counter\n"
            f"strato_edge_replayed_requests_total {self.answers.replays}\n"
        )
        return Response(text, media_type="text/plain; version=0.0.4")

    # --- inference -----------------------------------------------------------------------
    async def _served(self, request: Request) -> ServedModel:
        params = request.path_params
        name, version = params["model"], params.get("version")
        serving.check_model_name(name, version)  # `..` and friends never reach the disk
        return await self.store.get(name, version)

    @staticmethod
    def _model_headers(served: ServedModel) -> dict[str, str]:
        return {MODEL_VERSION: served.version, PRECISION: served.precision}

    async def infer(self, request: Request) -> Response:
        return await self._handle(request, self._served, sagemaker=False)

    async def invocations(self, request: Request) -> Response:
        return await self._handle(request, self._sagemaker_target, sagemaker=True)

    async def _handle(
        self,
        request: Request,
        resolve: Callable[[Request], Awaitable[ServedModel]],
        *,
        sagemaker: bool,
    ) -> Response:
        started = time.perf_counter()
        served: ServedModel | None = None
        try:
            headers = _header_map(request)
            self._authorize(headers)
            served = await resolve(request)
            if sagemaker and _asks_for_metadata(headers):
                response = _json(dict(served.metadata), headers=self._model_headers(served))
            else:
                response = await self._infer(request, headers, served, sagemaker=sagemaker)
        except Exception as exc:
            response = _error(exc)
        self._count(served, response.status_code, time.perf_counter() - started)
        return response

    def _count(self, served: ServedModel | None, status: int, seconds: float) -> None:
        if served is None:  # unknown model names never become metric labels
            self.metrics.request("_unknown", status, seconds)
            return
        self.metrics.request(
            served.name, status, seconds, version=served.version, precision=served.precision
        )
        self.metrics.inference(served.name, served.version, ok=status < 400, seconds=seconds)

    async def _sagemaker_target(self, request: Request) -> ServedModel:
        target = request.headers.get(SAGEMAKER_TARGET)
        served = self.store.served()
        if target:
            name = target.removesuffix(".tar.gz")
            name, _, version = name.replace("/", ":").partition(":")
            serving.check_model_name(name, version or None)
            return await self.store.get(name, version or None)
        if len(served) != 1:
            message = (
                f"{len(served)} models are served ({sorted(served)}); name one in the "
                "X-Amzn-SageMaker-Target-Model header"
            )
            raise InvalidInput(message) if served else ModelNotFound(message)
        return await self.store.get(next(iter(served)))

    async def _infer(
        self, request: Request, headers: dict[str, str], served: ServedModel, *, sagemaker: bool
    ) -> Response:
        # A slow body holds a connection and a buffer: it gets the request deadline too.
        body = await _with_deadline(self._body(request, headers), self.config.timeout_s)
        header_length = serving.header_length_from(headers)
        if not sagemaker or uses_shared_memory(body, header_length):
            answer = await self.answer(served, body, header_length, request.scope.get("client"))
            return self._respond(answer, served, sagemaker)
        wants = accepted(headers)  # 406 before any work
        # the container contract: JSON, OIP binary, x-npy, csv
        decode = functools.partial(decode_invocation, body, headers, served)
        if len(body) > DECODE_INLINE_BYTES:
            decoded = await asyncio.to_thread(decode)
        else:
            decoded = decode()
        outputs = await _with_deadline(served.batcher.infer(decoded.inputs), self.config.timeout_s)
        if wants is not None and wants != "application/json":
            body = encode_array(decoded, outputs, wants)
            return Response(body, 200, self._model_headers(served), wants)
        if wants is not None:
            decoded = as_json(decoded)
        answer = serving.encode(
            decoded, outputs, model_name=served.name, model_version=served.version
        )
        return self._respond(answer, served, sagemaker)

    async def answer(
        self, served: ServedModel, body: bytes, header_length: int | None, client: Any
    ) -> serving.Answer:
        """Decode, run (through the model's batcher, within the deadline) and encode one OIP
        request; `client` is the ASGI peer, which shared memory must find local. The Starlette
        route and `strato_edge.fastpath` both answer through here."""
        if uses_shared_memory(body, header_length):
            return await self._answer_shm(served, body, header_length, client)
        if len(body) > DECODE_INLINE_BYTES:
            decoded = await asyncio.to_thread(serving.decode, body, header_length=header_length)
        else:
            decoded = serving.decode(body, header_length=header_length)
        if decoded.id is not None:
            # A repeated id + body (an outbox resending) is answered again, not run again.
            key = request_key(served.name, served.version, decoded.id, body, f"{header_length}")
            return await self.answers.answer(key, functools.partial(self._run, decoded, served))
        return await self._run(decoded, served)

    async def _run(self, decoded: serving.DecodedRequest, served: ServedModel) -> serving.Answer:
        outputs = await _with_deadline(served.batcher.infer(decoded.inputs), self.config.timeout_s)
        return serving.encode(
            decoded, outputs, model_name=served.name, model_version=served.version
        )

    async def _answer_shm(
        self, served: ServedModel, body: bytes, header_length: int | None, client: Any
    ) -> serving.Answer:
        """Tensors in registered regions: read in place, outputs written back into them."""
        if self.shm is None:
            raise InvalidInput(OFF)
        require_local(client)
        decoded, places = self.shm.decode(body, header_length)
        outputs = await _with_deadline(served.batcher.infer(decoded.inputs), self.config.timeout_s)
        return self.shm.encode(
            decoded, outputs, places, model_name=served.name, model_version=served.version
        )

    def _respond(self, answer: serving.Answer, served: ServedModel, sagemaker: bool) -> Response:
        answer_headers = self._model_headers(served)
        if answer.header_length is not None and not sagemaker:
            answer_headers[serving.HEADER_LENGTH] = str(answer.header_length)
        return Response(
            answer.body, 200, answer_headers, media_type=answer.media_type(sagemaker=sagemaker)
        )

    # --- lifecycle -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.start()
        watcher = None
        if not self.store.single_bundle and self.config.watch_interval_s > 0:
            watcher = asyncio.get_running_loop().create_task(
                self.store.watch(self.config.watch_interval_s)
            )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self.store.aclose()
            if self.shm is not None:
                self.shm.close()
            self.executor.shutdown(wait=False, cancel_futures=True)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404/405 for unknown paths and methods, as `{"error": ...}` like the rest.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return _json({"error": f"{request.method} {request.url.path}: {detail}"}, status)


def create_app(config: ServeConfig) -> InferFastPath:
    """The ASGI app for `config`; models load in its lifespan, before the port opens.

    `POST …/infer` is answered on raw ASGI (`strato_edge.fastpath`); every other route by
    Starlette behind it.
    """
    server = EdgeServer(config)
    g = server.guarded
    routes = [  # the hot routes first: Starlette tries them in order
        Route("/v2/models/{model}/infer", server.infer, methods=["POST"]),
        Route("/invocations", server.invocations, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", server.infer, methods=["POST"]),
        Route("/v2/health/live", server.live),
        Route("/v2/health/ready", server.ready),
        Route("/ping", server.ready),
        Route("/v2", g(server.server_metadata)),
        Route("/v2/models/stats", g(server.model_stats)),
        Route("/v2/models/{model}", g(server.model_metadata)),
        Route("/v2/models/{model}/config", g(server.model_config)),
        Route("/v2/models/{model}/versions/{version}/config", g(server.model_config)),
        Route("/v2/models/{model}/stats", g(server.model_stats)),
        Route("/v2/models/{model}/versions/{version}/stats", g(server.model_stats)),
        Route("/v2/models/{model}/versions/{version}", g(server.model_metadata)),
        Route("/v2/models/{model}/ready", g(server.model_ready)),
        Route("/v2/models/{model}/versions/{version}/ready", g(server.model_ready)),
        Route("/v2/repository/index", g(server.repository_index), methods=["GET", "POST"]),
        Route("/metrics", g(server.metrics_text)),
        *shm_routes(server.shm, g),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.edge = server
    return InferFastPath(app, server)
