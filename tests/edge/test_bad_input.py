"""What the server refuses: every client mistake is a 4xx `{"error": ...}`, never a 500 or a hang."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, encode_request

pytestmark = pytest.mark.timeout(120)

GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.5] * 784}


def _with(**changes):
    return json.dumps({"inputs": [{**GOOD, **changes}]}).encode()


BAD_BODIES = {
    "malformed JSON": b'{"inputs": [',
    "not an object": b"[1, 2, 3]",
    "no inputs": b'{"outputs": []}',
    "empty inputs": b'{"inputs": []}',
    "unknown datatype": _with(datatype="FP33"),
    "BYTES datatype": _with(datatype="BYTES"),
    "wrong datatype for the model": _with(datatype="INT32", data=[1] * 784),
    "shape/data mismatch": _with(data=[0.5] * 783),
    "shape is not a list": _with(shape="1x784"),
    "negative dimension": _with(shape=[-1, 1, 28, 28]),
    "wrong rank": _with(shape=[1, 784]),
    "wrong input name": _with(name="image"),
    "data not numbers": _with(data=["a"] * 784),
    "NaN": b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], '
    b'"data": [NaN' + b", 0.5" * 783 + b"]}]}",
    "NaN via binary": None,
    "huge shape": _with(shape=[1 << 20, 1 << 20, 28, 28]),
    "empty batch": _with(shape=[0, 1, 28, 28], data=[]),
    "unknown output": json.dumps({"inputs": [GOOD], "outputs": [{"name": "probs"}]}).encode(),
    "input given twice": json.dumps({"inputs": [GOOD, GOOD]}).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_get_400_with_an_error(tiny_server, case):
    body, headers = BAD_BODIES[case], {}
    if body is None:
        x = np.full((1, 1, 28, 28), np.nan, np.float32)
        body, length = encode_request({"input": x})
        headers = {HEADER_LENGTH: str(length)}
    with tiny_server.client() as http:
        response = http.post("/v2/models/tiny/infer", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]
        # the server is still fine afterwards
        assert http.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("header", "cut"),
    [("99999", 0), ("-5", 0), ("abc", 0), (None, 100)],
    ids=["header-longer-than-body", "negative-header", "non-integer-header", "truncated-binary"],
)
def test_broken_binary_framing_gets_400(tiny_server, digit_batch, header, cut):
    body, length = encode_request({"input": digit_batch})
    headers = {HEADER_LENGTH: header if header is not None else str(length)}
    with tiny_server.client() as http:
        response = http.post(
            "/v2/models/tiny/infer", content=body[: len(body) - cut], headers=headers
        )
    assert response.status_code == 400, response.text
    assert "error" in response.json()


def test_unknown_model_version_and_route_get_404(tiny_server):
    body = _with()
    with tiny_server.client() as http:
        for path in ("/v2/models/nope/infer", "/v2/models/tiny/versions/7/infer"):
            response = http.post(path, content=body)
            assert response.status_code == 404, path
            assert "error" in response.json()
        assert http.get("/v2/models/nope").status_code == 404
        assert http.get("/v2/models/nope/ready").status_code == 404
        assert http.get("/v3/anything").json()["error"]
        assert http.get("/v2/models/tiny/infer").status_code == 405


def test_oversized_body_gets_413_by_content_length(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), max_body_bytes=64 * 1024)
    big = np.zeros((40, 1, 28, 28), np.float32)  # 125 KB binary
    body, length = encode_request({"input": big})
    with server.client() as http:
        response = http.post(
            "/v2/models/tiny/infer", content=body, headers={HEADER_LENGTH: str(length)}
        )
        assert response.status_code == 413
        assert "limit" in response.json()["error"]
        small, length = encode_request({"input": big[:2]})
        ok = http.post("/v2/models/tiny/infer", content=small, headers={HEADER_LENGTH: str(length)})
        assert ok.status_code == 200


def test_oversized_chunked_body_gets_413_while_streaming(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), max_body_bytes=64 * 1024)

    def chunks():
        for _ in range(100):
            yield b" " * 4096  # 400 KB with no Content-Length

    with server.client() as http:
        response = http.post("/v2/models/tiny/infer", content=chunks())
    assert response.status_code == 413
    assert "error" in response.json()


def test_lying_content_length_does_not_hang_the_server(tiny_server):
    """A client that promises more bytes than it sends, then hangs up: the server keeps serving."""
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=5) as sock:
        sock.sendall(
            b'POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"in'
        )
    with tiny_server.client() as http:
        assert http.post("/v2/models/tiny/infer", content=_with()).status_code == 200


def test_deadline_gives_504(tiny_registry, edge_server, digit_batch):
    server = edge_server(Path(tiny_registry.url), timeout_s=1e-6)
    body, length = encode_request({"input": digit_batch})
    with server.client() as http:
        response = http.post(
            "/v2/models/tiny/infer", content=body, headers={HEADER_LENGTH: str(length)}
        )
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


def _binary_header_only(shape):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    return header, {HEADER_LENGTH: str(len(header))}


MALFORMED = {  # each was a 500 with an exception name before the fix
    "0-d tensor": (_with(shape=[], data=[0.5]), {}),
    "zero times 2**63": (_with(shape=[0, 2**63], data=[]), {}),
    "zero times 2**62 squared": (_with(shape=[0, 2**62, 2**62], data=[]), {}),
    "70 axes": (_with(shape=[1] * 70, data=[0.5]), {}),
    "binary zero times 2**63": _binary_header_only([0, 2**63]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_shapes_get_400_without_internals(tiny_server, case, tmp_path):
    body, headers = MALFORMED[case]
    with tiny_server.client() as http:
        for path in ("/v2/models/tiny/infer", "/invocations"):
            response = http.post(path, content=body, headers=headers)
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert "Traceback" not in error and "internal" not in error
            assert str(tmp_path) not in response.text
        assert http.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [0, 2**40, 2**40, 2**40], [1] * 40])
def test_grpc_inputs_follow_the_same_shape_rules(shape):
    from strato import InvalidInput
    from strato_edge.grpc_service import decode_inputs
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=shape)
    assert tensor.name == "input"
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput):
        decode_inputs(request)
