"""Fuzz the OIP v2 codec: every body decodes or raises `InvalidInput`, nothing else, ever."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strato import InvalidInput
from strato._codec import (
    MAX_ELEMENTS,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    header_length_from,
)
from strato._tensors import TensorSpec, validate_inputs

# The shared strategies sit beside this file; found in any pytest import mode.
from support.fuzz import FUZZ, FUZZ_LIGHT, TIMEOUT, arrays, json_values, request_bodies

pytestmark = pytest.mark.timeout(TIMEOUT)

_SHORT_HEADER = (
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}'
)
MODEL_INPUT = {"input": TensorSpec("input", "FP32", (-1, 1, 28, 28))}


def _decode_or_refuse(body: bytes, header_length: int | None) -> Any:
    try:
        return decode_request(body, header_length=header_length)
    except InvalidInput as exc:
        assert str(exc)  # the message is what the 4xx `{"error"}` carries
        return None


@FUZZ
@given(request_bodies())
def test_decode_request_accepts_or_raises_invalid_input(case: tuple[bytes, int | None]) -> None:
    body, header_length = case
    decoded = _decode_or_refuse(body, header_length)
    if decoded is None:
        return
    for name, array in decoded.inputs.items():
        assert isinstance(name, str) and name
        assert isinstance(array, np.ndarray)
        assert array.size <= MAX_ELEMENTS
    # what the servers do next: check against the model's signature
    with contextlib.suppress(InvalidInput):
        validate_inputs(MODEL_INPUT, decoded.inputs)


@FUZZ
@given(request_bodies())
def test_decode_response_accepts_or_raises_invalid_input(case: tuple[bytes, int | None]) -> None:
    body, header_length = case
    with contextlib.suppress(InvalidInput):
        decode_response(body, header_length=header_length)


@FUZZ_LIGHT
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), arrays, min_size=1, max_size=3),
    st.booleans(),
)
def test_request_round_trip_is_bit_exact(inputs: dict[str, Any], binary: bool) -> None:
    body, header_length = encode_request(inputs, binary=binary)
    decoded = decode_request(body, header_length=header_length)
    assert decoded.inputs.keys() == inputs.keys()
    for name, array in inputs.items():
        got = decoded.inputs[name]
        assert got.dtype == array.dtype and got.shape == array.shape
        if binary:  # raw bytes: NaN payloads and -0.0 survive exactly
            assert got.tobytes() == array.tobytes()
        else:
            np.testing.assert_array_equal(got, array)


@FUZZ_LIGHT
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), arrays, min_size=1, max_size=3),
    st.sampled_from([True, False, "some"]),
)
def test_response_round_trip(outputs: dict[str, Any], binary: Any) -> None:
    chosen: bool | set[str] = set(list(outputs)[:1]) if binary == "some" else binary
    body, header_length = encode_response(
        outputs, model_name="m", model_version="1", id="r", binary=chosen
    )
    decoded = decode_response(body, header_length=header_length)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "1", "r")
    for name, array in outputs.items():
        expected = array
        if array.dtype.kind == "f" and not (chosen is True or name in (chosen or ())):
            # JSON has no Inf: orjson writes every non-finite float as null, read back as NaN
            expected = np.where(np.isfinite(array), array, np.nan).astype(array.dtype)
        np.testing.assert_array_equal(decoded.outputs[name], expected)


@FUZZ_LIGHT
@given(
    st.dictionaries(
        st.sampled_from(
            ["Inference-Header-Content-Length", "inference-header-content-length", "content-type"]
        ),
        st.text(max_size=40)
        | st.integers(-(2**70), 2**70).map(str)
        | st.integers(0, 99).map(lambda n: f"application/json; json-header-size={n}"),
    )
)
def test_header_length_from_headers(headers: dict[str, str]) -> None:
    try:
        value = header_length_from(headers)
    except InvalidInput:
        return
    assert value is None or value >= 0


@pytest.mark.parametrize(
    ("body", "header_length", "match"),
    [
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1e300],"data":[1]}]}', None, "shape"),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[65536,65536],"data":[]}]}',
            None,
            "exceeds",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[NaN]}]}',
            None,
            "malformed JSON",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,"a"]}]}',
            None,
            "not FP32",
        ),
        (b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["a"]}]}', None, "BYTES"),
        (_SHORT_HEADER + b"\x00\x00\x80\x7f", len(_SHORT_HEADER), "short"),
        (b'{"inputs":[]}', 13, "non-empty"),
        (b'{"inputs":[{}]}', 99, "only"),
    ],
)
def test_known_bad_bodies(body: bytes, header_length: int | None, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode_request(body, header_length=header_length)


def test_nan_and_inf_in_binary_tensors_reach_validation() -> None:
    """JSON cannot spell NaN, binary can: the codec passes it, the signature check refuses it."""
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 3, 4] = np.nan
    body, header_length = encode_request({"input": x})
    decoded = decode_request(body, header_length=header_length)
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        validate_inputs(MODEL_INPUT, decoded.inputs)


@FUZZ_LIGHT
@given(json_values)
def test_any_json_value_as_request(value: Any) -> None:
    import json

    _decode_or_refuse(json.dumps(value).encode(), None)


def test_response_parameters_must_be_an_object() -> None:
    """Found by the fuzzer: `"parameters": true` in a response raised TypeError in the SDK."""
    with pytest.raises(InvalidInput, match="parameters"):
        decode_response(b'{"parameters": true, "outputs": []}')


@FUZZ
@given(
    st.lists(st.integers(min_value=0, max_value=2**70), min_size=1, max_size=6).map(
        lambda dims: [0, *dims]
    ),
    st.booleans(),
)
def test_empty_shapes_with_huge_axes_are_refused_not_crashed(
    shape: list[int], binary: bool
) -> None:
    """No element, but axes numpy cannot hold (`[0, 2**63]` was a ValueError, so a 500)."""
    import json

    entry: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": shape}
    if binary:
        entry["parameters"] = {"binary_data_size": 0}
    else:
        entry["data"] = []
    body = json.dumps({"inputs": [entry]}).encode()
    decoded = _decode_or_refuse(body, len(body) if binary else None)
    if decoded is not None:
        assert decoded.inputs["x"].size == 0
