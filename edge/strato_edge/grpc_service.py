"""KServe v2 / Triton gRPC inference service (`inference.GRPCInferenceService`) on the daemon.

It runs on the HTTP server's event loop and serves from the same `ModelStore`: the same loaded
engines, the same dynamic batchers, the same metrics, the same bearer token (gRPC metadata
`authorization: Bearer <token>`). `tritonclient.grpc` works unchanged: health, server and model
metadata, model config, statistics, the repository index, and inference (unary and streamed)
with typed `contents` or `raw_input_contents`. Answers always carry `raw_output_contents` (what tritonclient reads).

The message classes are tritonclient's generated stubs of Triton's `grpc_service.proto`, the
very classes the client speaks, so the two never drift. grpcio and tritonclient come with the
`grpc` extra (`pip install 'strato[edge,grpc]'`); nothing here is imported unless
`--grpc-port` is given.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import numpy as np
from google.protobuf import json_format
from strato import InvalidInput, Timeout, serving, wire
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from strato_edge.triton import model_config, model_statistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from strato_edge.device_store import ServedModel
    from strato_edge.server import EdgeServer

__all__ = ["InferenceServicer", "start_grpc_server"]

log = logging.getLogger("strato.edge.grpc")

# Which typed field of InferTensorContents carries each datatype (FP16 has none: raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
MAX_ELEMENTS = 1 << 26


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _answer_of(exc: BaseException) -> tuple[grpc.StatusCode, str, int]:
    """The gRPC code, message and HTTP-equivalent status (for metrics) for `exc`, through
    strato's one error -> status mapping."""
    if isinstance(exc, _Abort):
        return exc.code, str(exc), 401
    if isinstance(exc, asyncio.TimeoutError):
        exc = Timeout("the request ran past its deadline")
    status, document = serving.error_answer(exc)
    if status >= 500 and status not in _HTTP_TO_GRPC:
        log.error("unexpected error", exc_info=exc)
    return _HTTP_TO_GRPC.get(status, grpc.StatusCode.INTERNAL), str(document["error"]), status


def _code_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    code, message, _ = _answer_of(exc)
    return code, message


def _shape(dims: Any, name: str) -> tuple[int, ...]:
    # The HTTP decoder's rules: [0, 2**62, 2**62] overflowed an int64 product to 0 here.
    return serving.check_shape([int(d) for d in dims], name)


def decode_inputs(request: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The request's tensors, from `raw_input_contents` (in input order) or typed `contents`."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input"
        )
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInput(f"input {name!r}: shared memory is not served over gRPC")
        try:
            dtype = wire.dtype_of(tensor.datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"input {name!r}: {exc}") from None
        shape = _shape(tensor.shape, name)
        count = int(np.prod(shape, dtype=np.int64))
        if raw:
            data = raw[index]
            if len(data) != count * dtype.itemsize:
                raise InvalidInput(
                    f"input {name!r}: {len(data)} bytes for shape {list(shape)} "
                    f"{tensor.datatype} (expected {count * dtype.itemsize})"
                )
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            field = _CONTENTS.get(tensor.datatype)
            values = getattr(tensor.contents, field) if field else ()
            if len(values) != count:
                raise InvalidInput(
                    f"input {name!r}: {len(values)} values for shape {list(shape)}"
                    + ("" if field else f"; {tensor.datatype} needs raw_input_contents")
                )
            array = np.asarray(values, dtype=dtype).reshape(shape)
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        inputs[name] = array
    return inputs


def encode_outputs(
    request: Any, outputs: dict[str, np.ndarray[Any, Any]], served: ServedModel
) -> Any:
    """A ModelInferResponse with the requested outputs (all when none is named), raw contents."""
    wanted = [o.name for o in request.outputs] or list(outputs)
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; the model has {sorted(outputs)}")
    response = service_pb2.ModelInferResponse(
        model_name=served.name, model_version=served.version, id=request.id
    )
    for name in wanted:
        array = np.ascontiguousarray(outputs[name])
        try:
            datatype = wire.datatype_of(array.dtype)
        except InvalidInput as exc:
            raise InvalidInput(f"output {name!r}: {exc}") from None
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(array.tobytes())
    return response


def _tensor_metadata(spec: dict[str, Any]) -> Any:
    shape = [d if isinstance(d, int) else -1 for d in spec["shape"]]
    return service_pb2.ModelMetadataResponse.TensorMetadata(
        name=spec["name"], datatype=spec["datatype"], shape=shape
    )


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """`inference.GRPCInferenceService` over an `EdgeServer`'s store, batchers and metrics."""

    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge
        token = edge.config.token
        self._token = token.encode() if token else None

    # --- guards ------------------------------------------------------------------------
    def _authorize(self, context: Any) -> None:
        if self._token is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, given = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self._token):
            raise _Abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token (metadata authorization: Bearer <token>)",
            )

    async def _fail(self, context: Any, exc: BaseException) -> NoReturn:
        code, message = _code_of(exc)
        await context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort raises

    async def _served(self, name: str, version: str) -> ServedModel:
        serving.check_model_name(name, version or None)  # `..` and friends never reach the disk
        return await self.edge.store.get(name, version or None)

    # --- health and metadata -------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.edge.store.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
            await self._served(request.name, request.version)
        except _Abort as exc:
            await self._fail(context, exc)
        except Exception:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        from strato import __version__

        try:
            self._authorize(context)
        except _Abort as exc:
            await self._fail(context, exc)
        return service_pb2.ServerMetadataResponse(
            name="strato-edge",
            version=__version__,
            extensions=["model_configuration", "statistics"],
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
            served = await self._served(request.name, request.version)
            versions = await asyncio.to_thread(self.edge.store.installed, served.name)
        except Exception as exc:
            await self._fail(context, exc)
        meta = served.metadata
        return service_pb2.ModelMetadataResponse(
            name=served.name,
            versions=versions,
            platform=meta.get("platform", ""),
            inputs=[_tensor_metadata(s) for s in meta["inputs"]],
            outputs=[_tensor_metadata(s) for s in meta["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
            served = await self._served(request.name, request.version)
        except Exception as exc:
            await self._fail(context, exc)
        config = model_config(served, self.edge.config.batching_for(served.name))
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=message)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
            if request.name:
                await self._served(request.name, request.version)
        except Exception as exc:
            await self._fail(context, exc)
        stats = model_statistics(
            self.edge.store, self.edge.metrics, request.name or None, request.version or None
        )
        return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
        except _Abort as exc:
            await self._fail(context, exc)
        response = service_pb2.RepositoryIndexResponse()
        for name, version in sorted(self.edge.store.served().items()):
            response.models.add(name=name, version=version, state="READY")
        return response

    # --- inference -----------------------------------------------------------------------
    async def _infer(self, request: Any) -> Any:
        """One inference, counted in the shared metrics; raises what went wrong."""
        started = time.perf_counter()
        status, served = 200, None
        try:
            served = await self._served(request.model_name, request.model_version)
            inputs = decode_inputs(request)
            outputs = await asyncio.wait_for(
                served.batcher.infer(inputs), self.edge.config.timeout_s
            )
            return encode_outputs(request, outputs, served)
        except Exception as exc:
            status = _answer_of(exc)[2]
            raise
        finally:
            self._count(served, status, time.perf_counter() - started)

    def _count(self, served: ServedModel | None, status: int, seconds: float) -> None:
        metrics = self.edge.metrics
        if served is None:  # unknown model names never become metric labels
            metrics.request("_unknown", status, seconds)
            return
        metrics.request(
            served.name, status, seconds, version=served.version, precision=served.precision
        )
        metrics.inference(served.name, served.version, ok=status < 400, seconds=seconds)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            self._authorize(context)
            return await self._infer(request)
        except Exception as exc:
            await self._fail(context, exc)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """The bidirectional stream (tritonclient's `start_stream` / `async_stream_infer`):
        one answer per request, in order; a bad request answers `error_message` and the
        stream goes on, as Triton's does."""
        try:
            self._authorize(context)
        except _Abort as exc:
            await self._fail(context, exc)
        async for request in requests:
            try:
                answer = await self._infer(request)
            except Exception as exc:
                yield service_pb2.ModelStreamInferResponse(error_message=_code_of(exc)[1])
                continue
            yield service_pb2.ModelStreamInferResponse(infer_response=answer)


async def start_grpc_server(edge: EdgeServer, host: str, port: int) -> tuple[Any, int]:
    """Start the service on the running loop; returns the server and the port it bound."""
    limit = edge.config.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(edge), server)
    shown = f"[{host}]" if ":" in host else host
    bound = server.add_insecure_port(f"{shown}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {shown}:{port}")
    await server.start()
    return server, bound
