"""The inference routes of the HTTP API, answered without Powertools' event handler.

`POST /v2/models/{m}[/versions/{v}]/infer` is the request that wakes a cold container, and
importing `aws_lambda_powertools.event_handler` for it costs more than the whole direct-invoke
path above the bare ONNX Runtime floor (benchmarks/cold_start.py). So those two routes are
matched here, on the event's method and path, and answered in the same HTTP API (2.0) response
shape the resolver writes; every other route (health, metadata, /predict, 404s) still goes to
the resolver in `strato_lambda.http_api`. `tests/lambda/test_http_fast.py` checks that both
give the same answers.
"""

from __future__ import annotations

import base64
import re
import time
from typing import TYPE_CHECKING, Any

from strato import InvalidInput, serving

from strato_lambda.function import error_answer, record_latency, service

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = ["answer_infer", "infer_route"]

_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


def infer_route(event: dict[str, Any]) -> tuple[str, str | None] | None:
    """(model, version) when the event is `POST …/infer`, else None (the resolver's turn)."""
    http = event["requestContext"]["http"]
    if http["method"] != "POST":
        return None
    found = _INFER.match(event.get("rawPath") or http["path"])
    if found is None:
        return None
    return found.group("model"), found.group("version")


def _body(event: dict[str, Any]) -> bytes:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded", False):
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            raise InvalidInput("the request body is marked base64 but is not") from None
    return str(raw).encode()


def _response(
    status: int,
    media_type: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    binary: bool = False,
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "body": base64.b64encode(body).decode() if binary else body.decode(),
        "isBase64Encoded": binary,
        "headers": {"Content-Type": media_type, **(headers or {})},
        "cookies": [],
    }


def answer_infer(
    event: dict[str, Any], context: LambdaContext, model: str, version: str | None
) -> dict[str, Any]:
    """The HTTP API response to an inference event; strato errors become `{"error": ...}`."""
    started = time.perf_counter()
    try:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        body = _body(event)
        service().check_size(len(body))
        result = service().infer(model, version, body, serving.header_length_from(headers))
    except Exception as exc:
        status, document = error_answer(exc, str(getattr(context, "aws_request_id", "unknown")))
        return _response(status, "application/json", serving.dumps(document))
    record_latency(started)
    answer = result.answer
    if answer.header_length is None:
        return _response(200, answer.media_type(), answer.body)
    return _response(
        200,
        answer.media_type(),
        answer.body,
        {serving.HEADER_LENGTH: str(answer.header_length)},
        binary=True,  # binary tensors travel base64-encoded, as the resolver sends bytes
    )
