"""The OIP v2 codec: JSON and Triton binary framing, both directions, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from strato import InvalidInput
from strato._codec import (
    HEADER_LENGTH,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    header_length_from,
)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
def test_request_round_trip(binary, dtype):
    x = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    body, header_length = encode_request({"x": x}, binary=binary, id="r1")
    assert (header_length is not None) == binary
    decoded = decode_request(body, header_length=header_length)
    assert decoded.id == "r1"
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.inputs["x"].dtype == x.dtype
    assert decoded.binary_default is True  # binary outputs are asked for by default


def test_response_round_trip_mixed_binary_and_json():
    outputs = {"logits": np.ones((2, 10), np.float32), "label": np.array([3, 4], np.int64)}
    body, header_length = encode_response(
        outputs, model_name="m", model_version="2", binary={"logits"}
    )
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 80
    assert header["outputs"][1]["data"] == [3, 4]
    decoded = decode_response(body, header_length=header_length)
    assert decoded.model_version == "2"
    np.testing.assert_array_equal(decoded.outputs["logits"], outputs["logits"])
    np.testing.assert_array_equal(decoded.outputs["label"], outputs["label"])


def test_nested_json_data_is_accepted():
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    ).encode()
    assert decode_request(body).inputs["x"].tolist() == [[1, 2], [3, 4]]


def test_requested_outputs_and_binary_flags():
    body = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
        }
    ).encode()
    assert decode_request(body).outputs == {"a": True, "b": False}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "JSON object"),
        (b"{}", "inputs"),
        (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}', "datatype"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', "needs 2"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            "negative",
        ),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}', "shape"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [99999, 99999, 99], "data": []}]}',
            "exceeds",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}',
            "not FP32",
        ),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', "name"),
        (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', "BYTES"),
    ],
)
def test_malformed_requests_are_invalid_input(body, match):
    with pytest.raises(InvalidInput, match=match):
        decode_request(body)


def test_binary_framing_errors():
    x = np.ones((2, 2), np.float32)
    body, header_length = encode_request({"x": x})
    assert header_length is not None
    with pytest.raises(InvalidInput, match="short"):
        decode_request(body[:-1], header_length=header_length)
    with pytest.raises(InvalidInput, match="follow"):
        decode_request(body + b"\0", header_length=header_length)
    with pytest.raises(InvalidInput, match="only"):
        decode_request(body, header_length=len(body) + 5)


def test_header_length_sources():
    assert header_length_from({HEADER_LENGTH: "12"}) == 12
    assert header_length_from({"inference-header-content-length": "7"}) == 7
    ct = "application/vnd.sagemaker-triton.binary+json;json-header-size=42"
    assert header_length_from({"content-type": ct}) == 42
    assert header_length_from({"content-type": "application/json"}) is None
    with pytest.raises(InvalidInput):
        header_length_from({HEADER_LENGTH: "x"})


def test_select_requested_outputs():
    outputs = {"a": np.ones(2, np.float32), "b": np.zeros(2, np.float32)}
    everything = decode_request(
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}'
    )
    assert everything.select(outputs) == (outputs, False)
    body = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "b", "parameters": {"binary_data": True}}],
        }
    ).encode()
    chosen, binary = decode_request(body).select(outputs)
    assert list(chosen) == ["b"] and binary == {"b"}
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) \['b'\]"):
        decode_request(body).select({"a": outputs["a"]})
