"""NVIDIA's tritonclient[grpc] from PyPI, unchanged, against the daemon's KServe v2 gRPC service.

The service shares the HTTP path's store, batchers and metrics: one server, both protocols.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from strato._engines import load_engine
from strato_edge.config import BatchingConfig

pytestmark = pytest.mark.timeout(120)

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def grpc_server(tiny_registry, edge_server):
    return edge_server(tiny_registry.url, grpc_port=0, batching=BatchingConfig(max_batch_size=8))


@pytest.fixture
def triton(grpc_server):
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_server.server.grpc_port}")
    yield client
    client.close()


def test_health_metadata_and_index(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("tiny")
    assert triton.is_model_ready("tiny", model_version="2")
    assert not triton.is_model_ready("nope")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "strato-edge"
    meta = triton.get_model_metadata("tiny", as_json=True)
    assert meta["name"] == "tiny" and meta["versions"] == ["1", "2"]
    assert meta["inputs"][0] == {
        "name": "input",
        "datatype": "FP32",
        "shape": ["-1", "1", "28", "28"],
    }
    assert meta["outputs"][0]["name"] == "logits"
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "tiny", "version": "1", "state": "READY"}]


def _input(batch: np.ndarray, raw: bool = True) -> object:
    given = grpcclient.InferInput("input", list(batch.shape), "FP32")
    given.set_data_from_numpy(batch)  # tritonclient sends raw_input_contents
    return given


def test_infer_with_raw_contents_equals_the_local_engine(triton, tiny_registry, digit_batch):
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    result = triton.infer(
        "tiny",
        [_input(digit_batch)],
        outputs=[grpcclient.InferRequestedOutput("logits")],
        request_id="abc",
    )
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    response = result.get_response(as_json=True)
    assert response["model_name"] == "tiny" and response["model_version"] == "1"
    assert response["id"] == "abc"


def test_infer_a_pinned_version_without_named_outputs(triton, tiny_registry, digit_batch):
    expected = load_engine(tiny_registry.open("tiny:2")).infer({"input": digit_batch})["logits"]
    result = triton.infer("tiny", [_input(digit_batch)], model_version="2")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)


def test_typed_contents_are_read_too(grpc_server, tiny_registry, digit_batch):
    """A request with typed `fp32_contents` (what non-tritonclient KServe clients send)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(digit_batch.shape))
    tensor.contents.fp32_contents.extend(digit_batch.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.server.grpc_port}") as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    logits = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(
        tuple(response.outputs[0].shape)
    )
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "datatype", "wanted"),
    [
        ([2, 1, 28, 28], "FP64", "FP32"),  # wrong datatype for the model
        ([2, 1, 28], "FP32", "shape"),
        ([2, 1, 28, 28], "BYTES", "datatype"),
    ],
)
def test_bad_input_is_invalid_argument_not_a_crash(triton, shape, datatype, wanted):
    dtype = {"FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}[datatype]
    batch = np.zeros(shape, dtype=dtype) if datatype != "BYTES" else np.full(shape, b"x", object)
    given = grpcclient.InferInput("input", shape, datatype)
    given.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("tiny", [given])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert wanted in caught.value.message()
    assert triton.is_server_live()


def test_unknown_model_is_not_found(triton, digit_batch):
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("nope", [_input(digit_batch)])
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_model_config_and_statistics(triton, digit_batch):
    config = triton.get_model_config("tiny", as_json=True)["config"]
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {
        "name": "input",
        "data_type": "TYPE_FP32",
        "dims": ["1", "28", "28"],
    }
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    for _ in range(3):
        triton.infer("tiny", [_input(digit_batch)])
    stats = triton.get_inference_statistics("tiny", as_json=True)["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("tiny", "1")]
    success = stats[0]["inference_stats"]["success"]
    assert success["count"] == "3" and int(success["ns"]) > 0


def test_grpc_and_http_share_one_server(grpc_server, triton, digit_batch):
    triton.infer("tiny", [_input(digit_batch)])
    with httpx.Client(base_url=grpc_server.url) as http:
        text = http.get("/metrics").text
        stats = http.get("/v2/models/tiny/stats")
    assert (
        'strato_edge_requests_total{model="tiny",version="1",precision="fp32",status="200"} 1'
        in text
    )
    # the gRPC request shows in the HTTP statistics: one store, one set of counters
    assert stats.json()["model_stats"][0]["inference_stats"]["success"]["count"] == "1"


def test_the_token_is_required_as_metadata(tiny_registry, edge_server, digit_batch):
    server = edge_server(tiny_registry.url, grpc_port=0, token="s3cret")
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.server.grpc_port}")
    try:
        assert client.is_server_live()  # health answers without a token, as on HTTP
        with pytest.raises(InferenceServerException) as caught:
            client.infer("tiny", [_input(digit_batch)])
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("tiny", headers={"authorization": "Bearer wrong"})
        result = client.infer(
            "tiny", [_input(digit_batch)], headers={"authorization": "Bearer s3cret"}
        )
        assert result.as_numpy("logits").shape == (4, 10)
    finally:
        client.close()


def test_strato_edge_serve_grpc_port_from_the_command_line(tiny_registry):
    """The real console script: `--grpc-port 0` picks a port, the serving line names it."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    strato = str(Path(sys.executable).with_name("strato"))
    process = subprocess.Popen(
        [strato, "edge", "serve", "--store", tiny_registry.url, "--port", "0", "--grpc-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "STRATO_EDGE_TOKEN": ""},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited"
            found = re.search(r"gRPC \(KServe v2\) on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "no gRPC line"
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_ready() and client.is_model_ready("tiny")
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_stream_infer_answers_in_order_and_survives_a_bad_request(triton, digit_batch):
    import queue

    answers: queue.Queue = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(3):
            triton.async_stream_infer("tiny", [_input(digit_batch)], request_id=str(i))
        bad = grpcclient.InferInput("input", [2, 1, 28], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 1, 28), np.float32))
        triton.async_stream_infer("tiny", [bad], request_id="bad")
        triton.async_stream_infer("tiny", [_input(digit_batch)], request_id="after")
        got = [answers.get(timeout=30) for _ in range(5)]
    finally:
        triton.stop_stream()
    ok = [result.get_response().id for result, error in got if error is None]
    errors = [str(error) for _, error in got if error is not None]
    assert ok == ["0", "1", "2", "after"]
    assert len(errors) == 1 and "shape" in errors[0]
