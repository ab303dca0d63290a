"""The Lambda function: `strato_lambda.app.handler`.

Two ways in, one model:

- API Gateway HTTP API (payload format 2.0) → Powertools' `APIGatewayHttpResolver` serving the
  Open Inference Protocol v2 routes (JSON, or binary tensors with a base64 body) and `POST /predict`
  (`strato_lambda.http_api`, imported on the first HTTP event).
- A direct `lambda.invoke` with strato's envelope (`strato.serving.decode_envelope`) → the same
  OIP bytes, base64 inside JSON; the SDK's `Lambda` transport speaks this.

Powertools: Logger (structured JSON, correlation id = the API request id or the envelope id),
Tracer (only built in Lambda without `POWERTOOLS_TRACE_DISABLED=true`: no X-Ray daemon needed
elsewhere), Metrics (EMF: InferenceLatency, ColdStart, ModelLoadTime, Errors by ErrorType).
Errors: statuses from `strato.serving.status_of` with `{"error": ...}`; an event of neither shape
(or an HTTP event missing what API Gateway always sends) is a 400; anything unexpected is
logged with its stack and answered 500 with the request id only. Shared state (settings,
Powertools objects, the model) lives in `strato_lambda.function`.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from strato import serving

from strato_lambda.function import (
    configure,
    count_error,
    error_answer,
    logger,
    metrics,
    record_latency,
    service,
    settings,
    tracer,
    tracing_enabled,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = [
    "configure",
    "count_error",
    "handler",
    "logger",
    "metrics",
    "record_latency",
    "service",
    "tracing_enabled",
]


def _error_answer(exc: BaseException, context: LambdaContext) -> tuple[int, str]:
    status, document = error_answer(exc, context.aws_request_id)
    return status, document["error"]


# --- direct invoke ----------------------------------------------------------------------
def _direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """An envelope in, an envelope out: never raises, like the HTTP routes."""
    started = time.perf_counter()
    try:
        request = serving.decode_envelope(event)
        result = service().infer(
            request.model, request.version, request.body, request.header_length
        )
        answer = result.answer.envelope(precision=result.precision)
    except Exception as exc:
        return serving.error_envelope(*_error_answer(exc, context))
    record_latency(started)
    return answer


# --- API Gateway HTTP API ---------------------------------------------------------------
def _http_event_problem(event: dict[str, Any]) -> str | None:
    """What an HTTP API (2.0) event lacks that API Gateway always sends; None if it is whole."""
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return "requestContext is missing"
    http = context.get("http")
    if not isinstance(http, dict):
        return "requestContext.http is missing"
    if not isinstance(http.get("method"), str) or not isinstance(http.get("path"), str):
        return "requestContext.http needs a string method and path"
    if not isinstance(context.get("stage"), str):  # Powertools reads it for every route
        return "requestContext.stage is missing"
    if not isinstance(event.get("rawPath", ""), str):
        return "rawPath must be a string"
    if event.get("body") is not None and not isinstance(event["body"], str):
        return f"body must be a string, got {type(event['body']).__name__}"
    if not isinstance(event.get("isBase64Encoded", False), bool):
        return "isBase64Encoded must be a boolean"
    headers = event.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        return "headers must map names to strings"
    query = event.get("queryStringParameters")
    if query is not None and not (
        isinstance(query, dict) and all(isinstance(v, str) for v in query.values())
    ):
        return "queryStringParameters must map names to strings"
    if not isinstance(event.get("cookies", []), list):
        return "cookies must be a list"
    return None


def _http_error(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": serving.dumps({"error": message}).decode(),
        "isBase64Encoded": False,
    }


def _http(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    problem = _http_event_problem(event)
    if problem is not None:
        count_error("MalformedEvent")
        return _http_error(400, f"malformed API Gateway HTTP API (2.0) event: {problem}")
    # Inference answers without the resolver (a cold container's first request should not
    # import Powertools' event_handler); the other routes load it on their first event.
    from strato_lambda.http_fast import answer_infer, infer_route

    route = infer_route(event)
    if route is not None:
        return answer_infer(event, context, *route)
    from strato_lambda.http_api import resolver

    try:
        answer: dict[str, Any] = resolver.resolve(event, context)
    except Exception as exc:  # the resolver's own handlers answer strato errors
        return _http_error(*_error_answer(exc, context))
    return answer


def _traced(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    if tracer is None:
        return function
    traced: Callable[..., dict[str, Any]] = tracer.capture_lambda_handler(capture_response=False)(
        function
    )
    return traced


@logger.inject_lambda_context(clear_state=True)
@_traced
@metrics.log_metrics(capture_cold_start_metric=True)
def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    load_seconds = service().take_load_seconds()
    if load_seconds is not None:
        metrics.add_metric(
            name="ModelLoadTime", unit=MetricUnit.Milliseconds, value=load_seconds * 1000
        )
    if serving.is_envelope(event):
        logger.set_correlation_id(str(event.get("id") or context.aws_request_id))
        return _direct(event, context)
    if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
        logger.set_correlation_id(
            str(event["requestContext"].get("requestId") or context.aws_request_id)
        )
        return _http(event, context)
    count_error("UnknownEvent")
    return serving.error_envelope(
        400, "not an API Gateway HTTP API (2.0) event nor a strato envelope"
    )


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an HTTP API v2 event or a strato envelope."""
    with warnings.catch_warnings():
        # Health probes add no metric of their own: an empty flush is expected, not a warning.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        answer: dict[str, Any] = _handle(event, context)
        return answer


# Load at init (Lambda's init phase runs at full CPU and before the first request's clock).
if settings.model_uri:
    configure(settings)
