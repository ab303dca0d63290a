"""The Lambda function: `strato_lambda.app.handler`.

Two ways in, one model:

- API Gateway HTTP API (payload format 2.0) → Powertools' `APIGatewayHttpResolver` serving the
  Open Inference Protocol v2 routes (JSON, or binary tensors with a base64 body) and `POST /predict`
  (`strato_lambda.http_api`, imported on the first HTTP event).
- A direct `lambda.invoke` with strato's envelope (`strato._envelope`) → the same OIP bytes,
  base64 inside JSON; the SDK's `Lambda` transport speaks this.

Powertools: Logger (structured JSON, correlation id = the API request id or the envelope id),
Tracer (only built in Lambda without `POWERTOOLS_TRACE_DISABLED=true`: no X-Ray daemon needed
elsewhere), Metrics (EMF: InferenceLatency, ColdStart, ModelLoadTime, Errors by ErrorType). Errors: 400/404/413 with
`{"error": ...}`; anything unexpected is logged with its stack and answered 500 with the request
id only.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from strato import InferenceError, InvalidInput, TransportError
from strato._envelope import ENVELOPE_VERSION, is_envelope, pack, unpack

from strato_lambda.service import ModelService
from strato_lambda.settings import Settings

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

_settings = Settings.resolve()


def tracing_enabled() -> bool:
    """Powertools' own rule (in Lambda, not SAM local, not disabled), decided before building one:
    the X-Ray SDK costs ~0.25 s of cold start to import, so without tracing it is never imported.
    """
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true", "yes", "on")
    in_lambda = bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


logger = Logger(service=_settings.service)
tracer = Tracer(service=_settings.service) if tracing_enabled() else None
metrics = Metrics(namespace=_settings.namespace, service=_settings.service)
_service: ModelService | None = None


def configure(
    settings: Settings | None = None, *, s3_client: Any = None, load: bool = True
) -> ModelService:
    """Point the handler at a model (the emulator and tests call this; Lambda uses the env)."""
    global _service
    _service = ModelService(settings or Settings.resolve(), s3_client=s3_client)
    if load and _service.settings.model_uri:
        _service.try_load()
    return _service


def service() -> ModelService:
    return _service if _service is not None else configure()


def count_error(kind: str) -> None:
    with single_metric(
        name="Errors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace
    ) as metric:
        metric.add_dimension(name="ErrorType", value=kind)


def record_latency(started: float) -> None:
    metrics.add_metric(
        name="InferenceLatency",
        unit=MetricUnit.Milliseconds,
        value=(time.perf_counter() - started) * 1000,
    )


# --- direct invoke ----------------------------------------------------------------------
def _error_envelope(status: int, message: str) -> dict[str, Any]:
    return {"strato": ENVELOPE_VERSION, "status": status, "error": message}


def _direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """An envelope in, an envelope out: never raises, like the HTTP routes."""
    started = time.perf_counter()
    try:
        model, version = event.get("model"), event.get("version")
        if not isinstance(model, str) or not model:
            raise InvalidInput("envelope has no 'model'")
        if version is not None and not isinstance(version, str):
            raise InvalidInput("envelope 'version' must be a string or null")
        body, header_length = unpack(event)
        result = service().infer(model, version, body, header_length)
        answer = pack(
            result.body,
            result.header_length,
            status=200,
            model_name=result.model_name,
            model_version=result.model_version,
            precision=result.precision,
        )
    except InferenceError as exc:
        count_error(type(exc).__name__)
        return _error_envelope(exc.status_code, str(exc))
    except TransportError as exc:
        count_error(type(exc).__name__)
        return _error_envelope(503, str(exc))
    except Exception:
        count_error("Internal")
        logger.exception("unhandled error", extra={"request_id": context.aws_request_id})
        return _error_envelope(500, f"internal error (request id {context.aws_request_id})")
    record_latency(started)
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
    if is_envelope(event):
        logger.set_correlation_id(str(event.get("id") or context.aws_request_id))
        return _direct(event, context)
    if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
        logger.set_correlation_id(
            str(event["requestContext"].get("requestId") or context.aws_request_id)
        )
        # The resolver (and Powertools' event_handler package) loads on the first HTTP event:
        # direct invokes, the SDK's path, never pay for importing it.
        from strato_lambda.http_api import resolver

        return resolver.resolve(event, context)
    count_error("UnknownEvent")
    return _error_envelope(400, "not an API Gateway HTTP API (2.0) event nor a strato envelope")


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an HTTP API v2 event or a strato envelope."""
    with warnings.catch_warnings():
        # Health probes add no metric of their own: an empty flush is expected, not a warning.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        answer: dict[str, Any] = _handle(event, context)
        return answer


# Load at init (Lambda's init phase runs at full CPU and before the first request's clock).
if _settings.model_uri:
    configure(_settings)
