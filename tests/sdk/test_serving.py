"""`strato.serving`: the one serving path (decode → run → encode, error → status) of every server."""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import strato
from strato import Bundle, serving
from strato._codec import decode_response, encode_request
from strato._engines import load_engine
from strato._envelope import pack
from support import build_oom_bundle

pytestmark = pytest.mark.timeout(60)




@pytest.fixture
def tiny_engine(tiny_bundle: Bundle):
    return load_engine(tiny_bundle)


def test_decode_reads_json_binary_and_sagemaker_forms(digit_batch):
    json_body, _ = encode_request({"input": digit_batch}, binary=False)
    binary_body, length = encode_request({"input": digit_batch}, binary=True)
    assert length is not None
    sagemaker = {"content-type": f"{serving.SAGEMAKER_BINARY};json-header-size={length}"}
    for body, headers in (
        (json_body, {}),
        (binary_body, {serving.HEADER_LENGTH.lower(): str(length)}),
        (binary_body, sagemaker),
    ):
        request = serving.decode(body, headers)
        np.testing.assert_array_equal(request.inputs["input"], digit_batch)


def test_envelope_round_trip_runs_on_an_engine(tiny_engine, digit_batch):
    body, length = encode_request({"input": digit_batch}, binary=True, id="r1")
    event = {"model": "tiny", "version": "1", "id": "e1", **pack(body, length)}
    request = serving.decode_envelope(event)
    assert (request.model, request.version, request.id) == ("tiny", "1", "e1")
    answer = serving.infer(
        tiny_engine,
        request.body,
        header_length=request.header_length,
        model_name="tiny",
        model_version="1",
    )
    envelope = answer.envelope(precision="fp32")
    assert envelope["status"] == 200 and envelope["model_version"] == "1"
    decoded = decode_response(
        base64.b64decode(envelope["body"]), header_length=answer.header_length
    )
    expected = tiny_engine.infer({"input": digit_batch})["logits"]
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-6)
    assert decoded.id == "r1"
    assert answer.headers() == {
        "content-type": "application/octet-stream",
        serving.HEADER_LENGTH: str(answer.header_length),
    }
    assert answer.headers(sagemaker=True)["content-type"].endswith(
        f"json-header-size={answer.header_length}"
    )


@pytest.mark.parametrize(
    "event",
    [
        {"strato": 1},
        {"strato": 1, "model": "tiny", "body": 5},
        {"strato": 1, "model": "tiny", "version": 3, "body": ""},
        {"strato": 1, "model": "tiny", "body": "!!not base64!!"},
        {"strato": 2, "model": "tiny", "body": ""},
    ],
)
def test_malformed_envelopes_are_invalid_input(event):
    with pytest.raises(strato.InvalidInput):
        serving.decode_envelope(event)


def _error_classes() -> list[type[BaseException]]:
    from strato import _errors

    return [
        obj
        for _, obj in inspect.getmembers(_errors, inspect.isclass)
        if issubclass(obj, strato.StratoError)
    ]


def _instance(kind: type[BaseException]) -> BaseException:
    return kind("message")


EXPECTED = {
    "Unauthorized": 401,
    "PayloadTooLarge": 413,
    "ModelNotFound": 404,
    "InvalidInput": 400,
    "InferenceError": 400,
    "Throttled": 429,
    "Timeout": 504,
    "Unavailable": 503,
    "ModelUnavailable": 503,
    "TransportError": 503,
    "EngineError": 503,
    "BundleError": 503,
    "IntegrityError": 503,
    "SignatureError": 503,
    "EngineMismatch": 503,
    "ConfigError": 500,
}


def test_every_error_of_the_tree_has_one_status():
    for kind in _error_classes():
        status = serving.status_of(_instance(kind))
        assert 400 <= status < 600, kind
        if kind.__name__ in EXPECTED:
            assert status == EXPECTED[kind.__name__], kind
        # a request's fault is 4xx, a server's is 5xx; never the other way round
        if issubclass(kind, strato.InferenceError):
            assert status < 500, kind
        if issubclass(kind, strato.Unavailable | strato.EngineError | strato.BundleError):
            assert status >= 500, kind
    assert serving.status_of(TimeoutError()) == 504
    assert serving.status_of(KeyError("x")) == 500


def test_engine_error_is_a_server_fault_not_bad_input():
    assert not issubclass(strato.EngineError, strato.InferenceError)
    assert serving.status_of(strato.EngineError("cuda died")) == 503


def test_public_messages_carry_no_paths_nor_internals():
    exc = strato.IntegrityError("/srv/strato/store/tiny/1/model.onnx does not match its sha256")
    status, document = serving.error_answer(exc)
    assert status == 503
    assert "/srv" not in document["error"] and "model.onnx" in document["error"]
    status, document = serving.error_answer(KeyError("/etc/secret"), request_id="abc")
    assert status == 500 and "/etc" not in document["error"] and "abc" in document["error"]
    assert json.dumps(document)  # plain strings only


def test_onnx_runtime_out_of_memory_is_an_engine_error_not_invalid_input(tmp_path):
    engine = load_engine(build_oom_bundle(tmp_path / "oom"))
    request = serving.decode(
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        ).encode()
    )
    with pytest.raises(strato.EngineError) as caught:
        serving.run(engine, request)
    assert not isinstance(caught.value, strato.InferenceError)
    status, document = serving.error_answer(caught.value)
    assert status == 503 and "onnxruntime_src" not in document["error"].replace(".../", "")


def test_a_shape_the_graph_refuses_stays_invalid_input(tiny_engine):
    with pytest.raises(strato.InvalidInput):
        tiny_engine.infer({"input": np.zeros((1, 1, 28, 27), np.float32)})


def test_check_model_name_refuses_traversal():
    for name, version in (("..", None), ("tiny", ".."), ("a/b", None), ("tiny", "1/../2")):
        with pytest.raises(strato.ModelNotFound):
            serving.check_model_name(name, version)
    serving.check_model_name("tiny", "2")


def test_the_serving_doc_example_runs(tmp_path, monkeypatch):
    import re

    import support

    # The example reads `.strato/registry` in the working folder: give it one of its own, so
    # the test does not depend on what another test (or a demo run) left in the checkout.
    registry = strato.Registry(tmp_path / ".strato" / "registry")
    registry.publish(support.build_tiny_bundle(tmp_path / "src", name="digits-mlp"))
    monkeypatch.chdir(tmp_path)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S)
    assert example is not None
    exec(compile(example.group(1), "docs/serving.md", "exec"), {})
