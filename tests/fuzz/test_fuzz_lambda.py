"""Fuzz the Lambda handler with real API Gateway HTTP API (2.0) events and direct-invoke envelopes.

Property: an HTTP event gets `statusCode` 4xx with `{"error"}` or 200 with a valid answer; an
envelope gets `status` 4xx with `error` or 200 with a decodable body; nothing raises, no 5xx.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from hypothesis import event, given
from hypothesis import strategies as st
from strato._codec import HEADER_LENGTH, decode_response, header_length_from

# The shared strategies sit beside this file; found in any pytest import mode.
from support.fuzz import (
    FUZZ,
    FUZZ_LIGHT,
    TIMEOUT,
    infer_bodies,
    json_values,
    weighted,
)

pytest.importorskip("aws_lambda_powertools")

pytestmark = pytest.mark.timeout(TIMEOUT)

EVENTS = Path(__file__).resolve().parents[1] / "lambda" / "events"
INFER_PATHS = [
    "/v2/models/tiny/infer",
    "/v2/models/tiny/infer",
    "/v2/models/tiny/versions/1/infer",
    "/v2/models/tiny/versions/9/infer",
    "/v2/models/nope/infer",
]


@pytest.fixture(scope="module")
def lambda_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import os

    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    from strato_lambda import app
    from strato_lambda.emulator import InvocationContext
    from strato_lambda.settings import Settings

    root = tmp_path_factory.mktemp("fuzz-lambda")
    bundle = support.build_tiny_bundle(root / "bundle")
    app.configure(Settings.resolve(model_uri=str(bundle.root), cache_dir=str(root / "cache")))
    context = InvocationContext(function_name="strato-infer", memory_limit_in_mb=1024)
    yield lambda event: app.handler(event, context)
    app.configure(Settings.resolve(model_uri=""), load=False)


@pytest.fixture(scope="module")
def http_event() -> dict[str, Any]:
    template = EVENTS / "http_infer_json.json"
    if not template.is_file():
        pytest.skip(f"{template} is missing")
    return dict(json.loads(template.read_text()))


def _http(
    template: dict[str, Any], path: str, body: bytes, headers: dict[str, str], *, b64: bool
) -> dict[str, Any]:
    request = copy.deepcopy(template)
    request["rawPath"] = path
    request["requestContext"]["http"]["path"] = path
    request["headers"] = {
        **{k: v for k, v in request["headers"].items() if k != "content-length"},
        **headers,
    }
    request["headers"]["content-length"] = str(len(body))
    if b64:
        request["body"], request["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        request["body"], request["isBase64Encoded"] = body.decode("utf-8", "replace"), False
    return request


def _check_http(response: dict[str, Any], path: str) -> None:
    status = response["statusCode"]
    event(f"HTTP {status}")
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
    assert status < 500, f"{status}: {body[:300]!r}"
    if status >= 400:
        error = json.loads(body)
        assert isinstance(error, dict) and isinstance(error.get("error"), str) and error["error"]
        return
    assert status == 200
    if path == "/predict":
        answer = json.loads(body)
        assert len(answer["outputs"]["logits"][0]) == 10
        return
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    decoded = decode_response(body, header_length=header_length_from(headers))
    assert decoded.outputs["logits"].shape[1] == 10


predict_bodies = weighted(
    (
        4,  # rows of 784 values: mostly answerable, some empty, Inf after the FP32 cast, or ragged
        st.builds(
            lambda rows, fill, width: json.dumps({"inputs": [[fill] * width] * rows}).encode(),
            st.integers(0, 3),
            st.sampled_from([0.0, 0.5, -3, 2**70, 1e39]),
            st.sampled_from([784, 784, 784, 783, 28]),
        ),
    ),
    (1, st.builds(lambda value: json.dumps({"inputs": value}).encode(), json_values)),
    (
        1,
        st.builds(
            lambda value: json.dumps({"model": value, "inputs": [[0.0] * 784]}).encode(),
            json_values,
        ),
    ),
    (1, json_values.map(lambda value: json.dumps(value).encode())),
    (1, st.binary(max_size=64)),
)


@FUZZ
@given(
    case=infer_bodies,
    path=st.sampled_from(INFER_PATHS),
    b64=st.booleans(),
    garbage_length=st.sampled_from([None] * 8 + ["-1", "x", "1e3"]),
    not_base64=st.sampled_from([False] * 9 + [True]),
)
def test_http_api_infer_answers_4xx_or_a_valid_result(
    lambda_app: Any,
    http_event: dict[str, Any],
    case: tuple[bytes, int | None],
    path: str,
    b64: bool,
    garbage_length: str | None,
    not_base64: bool,
) -> None:
    body, header_length = case
    headers: dict[str, str] = {}
    if garbage_length is not None:
        headers[HEADER_LENGTH.lower()] = garbage_length
    elif header_length is not None:
        headers[HEADER_LENGTH.lower()] = str(header_length)
    request = _http(http_event, path, body, headers, b64=b64 or header_length is not None)
    if not_base64:
        request["isBase64Encoded"], request["body"] = True, "%%% not base64 %%%"
    _check_http(lambda_app(request), path)


@FUZZ_LIGHT
@given(body=predict_bodies, path=st.sampled_from(["/predict", "/predict", "/v2/nothing/here"]))
def test_http_api_predict_answers_4xx_or_labels(
    lambda_app: Any, http_event: dict[str, Any], body: bytes, path: str
) -> None:
    _check_http(lambda_app(_http(http_event, path, body, {}, b64=False)), path)


envelope_fields = st.fixed_dictionaries(
    {
        "model": weighted(
            (6, st.just("tiny")), (1, st.sampled_from(["nope", "", "../x"])), (1, json_values)
        ),
        "version": weighted((6, st.none()), (1, st.sampled_from(["1", "9"])), (1, json_values)),
    }
)


@FUZZ
@given(
    case=infer_bodies,
    fields=envelope_fields,
    mangle=st.sampled_from(["none"] * 8 + ["body", "header_length", "drop_body"]),
    junk=json_values,
)
def test_direct_invoke_envelope_answers_4xx_or_a_valid_result(
    lambda_app: Any, case: tuple[bytes, int | None], fields: dict[str, Any], mangle: str, junk: Any
) -> None:
    body, header_length = case
    envelope = {
        "strato": 1,
        **fields,
        "body": base64.b64encode(body).decode(),
        "header_length": header_length,
    }
    if mangle == "drop_body":
        del envelope["body"]
    elif mangle != "none":
        envelope[mangle] = junk
    answer = lambda_app(envelope)
    status = answer["status"]
    event(f"envelope {status}")
    assert status < 500, answer
    if status >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"]
        return
    raw = base64.b64decode(answer["body"])
    decoded = decode_response(raw, header_length=answer.get("header_length"))
    assert decoded.outputs["logits"].shape[1] == 10


@FUZZ_LIGHT
@given(json_values | st.fixed_dictionaries({"strato": json_values}, optional={"body": json_values}))
def test_unknown_events_get_an_error_not_an_exception(lambda_app: Any, weird: Any) -> None:
    answer = lambda_app(weird)
    status = answer.get("status", answer.get("statusCode"))
    assert isinstance(status, int) and 400 <= status < 500, answer
