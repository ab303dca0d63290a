"""The HTTP API face of the function: Powertools' `APIGatewayHttpResolver` with the Open Inference
Protocol v2 routes (JSON, or binary tensors in a base64 body) and `POST /predict`.

Imported by `strato_lambda.app` on the first API Gateway event only; both take the function's
shared state from `strato_lambda.function`. Error statuses come from `strato.serving.status_of`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import strato
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from strato import InvalidInput, serving

from strato_lambda.function import error_answer, record_latency, service

__all__ = ["resolver"]

resolver = APIGatewayHttpResolver()


def _json(status: int, value: Any) -> Response[Any]:
    return Response(status, "application/json", serving.dumps(value).decode())


def _request_id() -> str:
    context = getattr(resolver, "lambda_context", None)
    return str(getattr(context, "aws_request_id", "") or "unknown")


# --- HTTP API routes --------------------------------------------------------------------
@resolver.get("/v2/health/live")
def health_live() -> Response[Any]:
    return _json(200, {"live": True})


@resolver.get("/v2/health/ready")
def health_ready() -> Response[Any]:
    ready = service().try_load()
    body: dict[str, Any] = {"ready": ready}
    if not ready:
        body["error"] = service().error
    return _json(200 if ready else 503, body)


@resolver.get("/v2")
def server_metadata() -> Response[Any]:
    return _json(
        200,
        {
            "name": "strato-lambda",
            "version": strato.__version__,
            "extensions": ["binary_tensor_data"],
        },
    )


@resolver.get("/v2/models/<model>")
def model_metadata(model: str) -> Response[Any]:
    return _json(200, service().metadata(model))


@resolver.get("/v2/models/<model>/versions/<version>")
def model_version_metadata(model: str, version: str) -> Response[Any]:
    return _json(200, service().metadata(model, version))


@resolver.get("/v2/models/<model>/ready")
def model_ready(model: str) -> Response[Any]:
    service().model_for(model)
    return _json(200, {"name": model, "ready": True})


@resolver.post("/v2/models/<model>/infer")
def infer(model: str) -> Response[Any]:
    return _infer(model, None)


@resolver.post("/v2/models/<model>/versions/<version>/infer")
def infer_version(model: str, version: str) -> Response[Any]:
    return _infer(model, version)


@resolver.post("/predict")
def predict() -> Response[Any]:
    started = time.perf_counter()
    result = service().predict(_body())
    record_latency(started)
    return _json(200, result)


def _body() -> bytes:
    event = resolver.current_event
    raw = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            raise InvalidInput("the request body is marked base64 but is not") from None
    return raw.encode()


def _infer(model: str, version: str | None) -> Response[Any]:
    started = time.perf_counter()
    headers = dict(resolver.current_event.headers or {})
    body = _body()
    service().check_size(len(body))
    result = service().infer(model, version, body, serving.header_length_from(headers))
    record_latency(started)
    answer = result.answer
    if answer.header_length is None:
        return Response(200, answer.media_type(), answer.body.decode())
    return Response(
        200,
        answer.media_type(),
        answer.body,  # bytes: Powertools sends them base64-encoded with isBase64Encoded
        headers={serving.HEADER_LENGTH: str(answer.header_length)},
    )


@resolver.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _error(exc: Exception) -> Response[Any]:
    return _json(*error_answer(exc, _request_id()))


@resolver.not_found
def _no_route(exc: Exception) -> Response[Any]:
    event = resolver.current_event
    return _json(404, {"error": f"no route for {event.http_method} {event.path}"})
