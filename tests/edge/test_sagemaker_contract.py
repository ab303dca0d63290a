"""SageMaker's container contract on /invocations: Content-Type and Accept are honoured, 415 for
a body the server cannot read, 406 for an answer it cannot give, SAGEMAKER_BIND_TO_PORT."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine
from support import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sagemaker_server(tiny_bundle, edge_server):
    return edge_server(tiny_bundle.root, sagemaker=True)


@pytest.fixture
def expected(tiny_bundle, digit_batch):
    return load_engine(tiny_bundle).infer({"input": digit_batch})["logits"]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _post(server, body: bytes, content_type: str, accept: str | None = None) -> httpx.Response:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    with server.client() as http:
        return http.post("/invocations", content=body, headers=headers)


def test_npy_in_json_out_by_default(sagemaker_server, digit_batch, expected):
    response = _post(sagemaker_server, _npy(digit_batch), "application/x-npy")
    assert response.status_code == 200, response.text
    logits = decode_response(response.content).outputs["logits"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_npy_in_npy_out(sagemaker_server, digit_batch, expected):
    response = _post(sagemaker_server, _npy(digit_batch), "application/x-npy", "application/x-npy")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    logits = np.load(io.BytesIO(response.content), allow_pickle=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_csv_rows_in_csv_out(sagemaker_server, digit_batch, expected):
    rows = "\n".join(",".join(repr(float(v)) for v in image.ravel()) for image in digit_batch)
    response = _post(sagemaker_server, rows.encode(), "text/csv", "text/csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    logits = np.loadtxt(io.StringIO(response.text), delimiter=",", ndmin=2)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_accept_json_turns_a_binary_request_into_a_json_answer(sagemaker_server, digit_batch):
    body, length = encode_request({"input": digit_batch})  # binary in, binary out asked
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(length),
        "Accept": "application/json",
    }
    with sagemaker_server.client() as http:
        response = http.post("/invocations", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "data" in response.json()["outputs"][0]


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status"),
    [
        (b"hello", "text/plain", None, 415),
        (b"\x89PNG", "image/png", None, 415),
        (b"{}", "application/json", "image/png", 406),
        (b"not,numbers\n", "text/csv", None, 400),
        (b"1,2,3\n", "text/csv", None, 400),  # 3 values for a 1x28x28 input
        (b"not an npy", "application/x-npy", None, 400),
    ],
)
def test_what_it_cannot_read_or_give(sagemaker_server, body, content_type, accept, status):
    response = _post(sagemaker_server, body, content_type, accept)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}


def test_sagemaker_bind_to_port(tiny_bundle):
    port = free_port()
    strato = str(Path(sys.executable).with_name("strato"))
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "STRATO_EDGE_TOKEN": ""}
    process = subprocess.Popen(
        [strato, "edge", "serve", "--sagemaker", "--store", str(tiny_bundle.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "never listened on SAGEMAKER_BIND_TO_PORT"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port} (SageMaker mode)" in output
