"""The Lambda handler answering real API Gateway HTTP API (2.0) events and direct envelopes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from strato import Bundle
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine
from strato._envelope import pack

pytestmark = pytest.mark.timeout(60)


def _reference(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    return load_engine(bundle).infer({"input": x})["logits"]


def _json_body(response: dict[str, Any]) -> Any:
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


def test_health_and_metadata(function: Any, event: Any, lambda_context: Any) -> None:
    ready = function.handler(event("http_health_ready"), lambda_context)
    assert ready["statusCode"] == 200 and _json_body(ready) == {"ready": True}
    meta = _json_body(function.handler(event("http_model_metadata"), lambda_context))
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["parameters"]["labels"] == [str(i) for i in range(10)]
    assert meta["parameters"]["precision"] == "fp32"


def test_infer_json_matches_onnx_runtime(
    function: Any, event: Any, lambda_context: Any, tiny_bundle: Bundle
) -> None:
    response = function.handler(event("http_infer_json"), lambda_context)
    assert response["statusCode"] == 200
    decoded = decode_response(response["body"].encode())
    assert decoded.id == "req-1" and decoded.model_version == "1"
    expected = _reference(tiny_bundle, np.zeros((1, 1, 28, 28), np.float32))
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-6)


def test_infer_binary_base64_body(
    function: Any, event: Any, lambda_context: Any, tiny_bundle: Bundle, digit_batch: np.ndarray
) -> None:
    body, header_length = encode_request({"input": digit_batch}, binary=True, binary_outputs=True)
    assert header_length is not None
    request = event("http_infer_json")
    request["body"] = base64.b64encode(body).decode()
    request["isBase64Encoded"] = True
    request["headers"]["content-type"] = "application/octet-stream"
    request["headers"][HEADER_LENGTH.lower()] = str(header_length)
    response = function.handler(request, lambda_context)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is True
    raw = base64.b64decode(response["body"])
    length = int(response["headers"][HEADER_LENGTH])
    decoded = decode_response(raw, header_length=length)
    np.testing.assert_allclose(
        decoded.outputs["logits"], _reference(tiny_bundle, digit_batch), rtol=1e-6
    )


def test_predict_returns_labels(function: Any, event: Any, lambda_context: Any) -> None:
    body = _json_body(function.handler(event("http_predict"), lambda_context))
    assert body["model_name"] == "tiny" and len(body["outputs"]["logits"]) == 1
    assert body["labels"][0] in [str(i) for i in range(10)]
    assert 0.0 < body["confidence"][0] <= 1.0


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v2/models/nope/infer", "{}", 404, "nope"),
        ("/v2/models/tiny/versions/9/infer", "{}", 404, "tiny:9"),
        ("/v2/models/tiny/infer", "{not json", 400, "malformed JSON"),
        ("/v2/models/tiny/infer", '{"inputs": []}', 400, "inputs"),
        (
            "/v2/models/tiny/infer",
            '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
            400,
            "input",
        ),
        ("/predict", '{"inputs": [[1, 2, 3]]}', 400, "784 values"),
        ("/predict", '{"inputs": [["a"]]}', 400, "numbers"),
        ("/predict", '{"inputs": [[1e300]]}', 400, "out of range"),
        ("/nope", None, 404, "no route"),
    ],
)
def test_errors_are_json_with_status(
    function: Any,
    event: Any,
    lambda_context: Any,
    path: str,
    body: str | None,
    status: int,
    needle: str,
) -> None:
    request = event("http_infer_json")
    request["rawPath"] = request["requestContext"]["http"]["path"] = path
    request["body"] = body
    response = function.handler(request, lambda_context)
    assert response["statusCode"] == status
    assert needle in _json_body(response)["error"]


def test_payload_over_the_limit_is_413(
    tiny_bundle: Bundle, event: Any, lambda_context: Any, tmp_path: Any
) -> None:
    from strato_lambda import app
    from strato_lambda.settings import Settings

    app.configure(Settings.resolve(model_uri=str(tiny_bundle.root), max_payload=1024))
    try:
        response = app.handler(event("http_infer_json"), lambda_context)
        assert response["statusCode"] == 413
        assert "payload limit" in _json_body(response)["error"]
        direct = app.handler(pack(b"x" * 2048, None, model="tiny", version=None), lambda_context)
        assert direct["status"] == 413
    finally:
        app.configure(Settings.resolve(model_uri=""), load=False)


def test_internal_error_is_500_without_stack(
    function: Any, event: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    engine = function.service().load().engine

    def explode(inputs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(engine, "infer", explode)  # a fault inside the engine, not the handler
    response = function.handler(event("http_infer_json"), lambda_context)
    assert response["statusCode"] == 500
    error = _json_body(response)["error"]
    assert lambda_context.aws_request_id in error and "secret" not in error
    logs = caplog.text
    assert "secret detail" in logs and "Traceback" in logs  # the stack goes to the log only


def test_direct_envelope_binary(
    function: Any, lambda_context: Any, tiny_bundle: Bundle, digit_batch: np.ndarray
) -> None:
    body, length = encode_request({"input": digit_batch}, binary=True, binary_outputs=True)
    answer = function.handler(
        pack(body, length, model="tiny", version="1", id="e-1"), lambda_context
    )
    assert answer["strato"] == 1 and answer["status"] == 200
    assert answer["model_version"] == "1" and answer["precision"] == "fp32"
    decoded = decode_response(
        base64.b64decode(answer["body"]), header_length=answer["header_length"]
    )
    np.testing.assert_allclose(
        decoded.outputs["logits"], _reference(tiny_bundle, digit_batch), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("envelope", "status", "needle"),
    [
        ({"strato": 1, "model": "other", "body": "e30="}, 404, "other"),
        ({"strato": 1, "model": "tiny", "body": "***"}, 400, "base64"),
        ({"strato": 1, "body": "e30="}, 400, "model"),
        ({"strato": 1, "model": "tiny", "body": "e30=", "header_length": -1}, 400, "header_length"),
        ({"hello": "world"}, 400, "envelope"),
    ],
)
def test_direct_envelope_errors(
    function: Any, lambda_context: Any, envelope: dict[str, Any], status: int, needle: str
) -> None:
    answer = function.handler(envelope, lambda_context)
    assert answer["status"] == status and needle in answer["error"]
    assert "body" not in answer


def test_emf_metrics(function: Any, event: Any, lambda_context: Any, capsys: Any) -> None:
    function.handler(event("http_infer_json"), lambda_context)
    function.handler({"strato": 1, "model": "other", "body": "e30="}, lambda_context)
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {
        m["Name"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"InferenceLatency", "ModelLoadTime", "Errors"} <= names
    errors = [b for b in blobs if "Errors" in b]
    assert (
        errors[0]["ErrorType"] == "ModelNotFound"
        and errors[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Strato"
    )


def test_unloadable_model_answers_503(event: Any, lambda_context: Any, tmp_path: Any) -> None:
    from strato_lambda import app
    from strato_lambda.settings import Settings

    (tmp_path / "reg" / "tiny").mkdir(parents=True)
    app.configure(Settings.resolve(model_uri=str(tmp_path / "reg" / "tiny@prod")))
    try:
        response = app.handler(event("http_health_ready"), lambda_context)
        assert response["statusCode"] == 503 and "tiny" in _json_body(response)["error"]
        assert app.handler(event("http_infer_json"), lambda_context)["statusCode"] == 503
    finally:
        app.configure(Settings.resolve(model_uri=""), load=False)


def test_import_loads_no_torch() -> None:
    code = (
        "import sys, strato_lambda.app, strato_lambda.cli; "
        "bad = [m for m in ('torch', 'tensorrt', 'boto3', 'aws_xray_sdk', "
        "'aws_lambda_powertools.event_handler') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_engine_out_of_memory_is_503(
    root_helpers: Any, event: Any, lambda_context: Any, tmp_path: Any
) -> None:
    from strato_lambda import app
    from strato_lambda.settings import Settings

    bundle = root_helpers.build_oom_bundle(tmp_path / "oom", name="tiny")
    app.configure(Settings.resolve(model_uri=str(bundle.root)))
    try:
        request = event("http_infer_json")
        request["body"] = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        )
        response = app.handler(request, lambda_context)
        assert response["statusCode"] == 503, response["body"]
        assert "ONNX Runtime failed" in _json_body(response)["error"]
        body, length = encode_request({"input": np.ones((1, 4), np.float32)})
        direct = app.handler(pack(body, length, model="tiny", version=None), lambda_context)
        assert direct["status"] == 503
    finally:
        app.configure(Settings.resolve(model_uri=""), load=False)


def test_app_and_http_api_do_not_import_each_other() -> None:
    """The HTTP face and the handler share `strato_lambda.function`, not each other."""
    import ast
    from pathlib import Path

    import strato_lambda

    package = Path(strato_lambda.__file__).parent
    for module, other in (("http_api", "strato_lambda.app"), ("function", "strato_lambda.app")):
        tree = ast.parse((package / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert other not in imported, f"{module} imports {other}"
    code = "import strato_lambda.http_api, sys; print('strato_lambda.app' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _without_http(request: dict[str, Any]) -> None:
    del request["requestContext"]["http"]


def _without_stage(request: dict[str, Any]) -> None:
    del request["requestContext"]["stage"]


def _numeric_body(request: dict[str, Any]) -> None:
    request["body"] = 12345


def _dict_body(request: dict[str, Any]) -> None:
    request["body"] = {"inputs": []}


def _list_headers(request: dict[str, Any]) -> None:
    request["headers"] = ["content-type"]


def _numeric_header(request: dict[str, Any]) -> None:
    request["headers"]["content-length"] = 5


def _huge_zero_shape(request: dict[str, Any]) -> None:
    request["body"] = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 2**63], "data": []}]}
    )


def _zero_d(request: dict[str, Any]) -> None:
    request["body"] = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [], "data": [0.5]}]}
    )


@pytest.mark.parametrize(
    "spoil",
    [
        _without_http,
        _without_stage,
        _numeric_body,
        _dict_body,
        _list_headers,
        _numeric_header,
        _huge_zero_shape,
        _zero_d,
    ],
)
def test_malformed_http_events_get_4xx_json_without_stack(
    function: Any, event: Any, lambda_context: Any, spoil: Any, tiny_bundle: Bundle
) -> None:
    request = event("http_infer_json")
    spoil(request)
    response = function.handler(request, lambda_context)
    assert 400 <= response["statusCode"] < 500, response
    error = _json_body(response)["error"]
    assert "Traceback" not in error and "internal" not in error
    assert str(tiny_bundle.root) not in response["body"] and ".py" not in response["body"]
    assert function.handler(event("http_infer_json"), lambda_context)["statusCode"] == 200


def test_huge_zero_shape_in_an_envelope_is_400(function: Any, lambda_context: Any) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [0, 2**63],
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    answer = function.handler(pack(header, len(header), model="tiny", version=None), lambda_context)
    assert answer["status"] == 400 and "exceeds" in answer["error"]
