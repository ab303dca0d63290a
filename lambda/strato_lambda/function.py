"""The function's process-wide state: settings, Powertools Logger/Tracer/Metrics, the model.

Both faces of the function (`strato_lambda.app`, the direct-invoke handler, and
`strato_lambda.http_api`, the HTTP API resolver) import from here, never from each other.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from strato import serving

from strato_lambda.service import ModelService
from strato_lambda.settings import Settings

__all__ = [
    "configure",
    "count_error",
    "error_answer",
    "logger",
    "metrics",
    "record_latency",
    "service",
    "settings",
    "tracer",
    "tracing_enabled",
]

settings = Settings.resolve()


def tracing_enabled() -> bool:
    """Powertools' own rule (in Lambda, not SAM local, not disabled), decided before building one:
    the X-Ray SDK costs ~0.25 s of cold start to import, so without tracing it is never imported.
    """
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true", "yes", "on")
    in_lambda = bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


logger = Logger(service=settings.service)
tracer = Tracer(service=settings.service) if tracing_enabled() else None
metrics = Metrics(namespace=settings.namespace, service=settings.service)
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
    """The model service, configured from the environment on first use."""
    return _service if _service is not None else configure()


def count_error(kind: str) -> None:
    """One `Errors` metric with dimension `ErrorType`."""
    with single_metric(
        name="Errors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace
    ) as metric:
        metric.add_dimension(name="ErrorType", value=kind)


def record_latency(started: float) -> None:
    """`InferenceLatency` since `started` (a `time.perf_counter()` reading)."""
    metrics.add_metric(
        name="InferenceLatency",
        unit=MetricUnit.Milliseconds,
        value=(time.perf_counter() - started) * 1000,
    )


def error_answer(exc: BaseException, request_id: str) -> tuple[int, dict[str, str]]:
    """`strato.serving.error_answer`, counted as an `Errors` metric; a 500 is logged with its
    stack (the client only sees the request id)."""
    status, document = serving.error_answer(exc, request_id=request_id)
    if status == 500:
        count_error("Internal")
        logger.exception("unhandled error", extra={"request_id": request_id}, exc_info=exc)
    else:
        count_error(type(exc).__name__)
    return status, document
