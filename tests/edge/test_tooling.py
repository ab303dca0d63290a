"""Operator tooling on the daemon: the unauthenticated metrics port, Triton's config and stats."""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def test_the_metrics_port_answers_without_the_token(tiny_registry, edge_server, digit_batch):
    server = edge_server(tiny_registry.url, token="s3cret", metrics_port=0)
    port = server.server.metrics_port
    assert port is not None and port != server.port
    with httpx.Client(base_url=server.url) as api:
        assert api.get("/metrics").status_code == 401  # the API itself keeps its token
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                            "data": digit_batch[:1].ravel().tolist()}]}  # fmt: skip
        headers = {"Authorization": "Bearer s3cret"}
        assert api.post("/v2/models/tiny/infer", json=body, headers=headers).status_code == 200
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert (
        'strato_edge_requests_total{model="tiny",version="1",precision="fp32",status="200"} 1'
        in scraped.text
    )
    other = httpx.get(f"http://127.0.0.1:{port}/v2/models/tiny")
    assert other.status_code == 404 and "error" in other.json()  # nothing but metrics there
    with socket.create_connection(("127.0.0.1", port), timeout=5) as junk:
        junk.sendall(b"\x00\xff garbage\r\n\r\n")
        junk.recv(1024)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200


def _infer(http: httpx.Client, digit_batch, n: int = 1) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(digit_batch.shape),
                        "data": digit_batch.ravel().tolist()}]}  # fmt: skip
    for _ in range(n):
        assert http.post("/v2/models/tiny/infer", json=body).status_code == 200


def test_model_config_in_tritons_shape(tiny_registry, edge_server):
    from strato_edge.config import BatchingConfig

    server = edge_server(tiny_registry.url, batching=BatchingConfig(max_batch_size=16))
    with server.client() as http:
        config = http.get("/v2/models/tiny/config").json()
        pinned = http.get("/v2/models/tiny/versions/2/config")
        missing = http.get("/v2/models/nope/config")
        extensions = http.get("/v2").json()["extensions"]
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert pinned.status_code == 200 and pinned.headers["X-Strato-Model-Version"] == "2"
    assert missing.status_code == 404 and "error" in missing.json()
    assert {"model_configuration", "statistics"} <= set(extensions)


def test_model_statistics_count_requests_queue_and_compute(tiny_server, digit_batch):
    with tiny_server.client() as http:
        before = http.get("/v2/models/tiny/stats").json()["model_stats"][0]
        _infer(http, digit_batch, n=3)
        http.post("/v2/models/tiny/infer", content=b"{")  # a failure counts as one
        everything = http.get("/v2/models/stats").json()["model_stats"]
        one = http.get("/v2/models/tiny/stats").json()["model_stats"]
        v2 = http.get("/v2/models/tiny/versions/2/stats").json()["model_stats"]
        missing = http.get("/v2/models/nope/stats")
    assert before["inference_stats"]["success"]["count"] == "0"
    assert [(s["name"], s["version"]) for s in everything] == [("tiny", "1")]
    stats = one[0]
    assert stats["inference_count"] == str(3 * digit_batch.shape[0])
    assert stats["execution_count"] == "3"
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == "3" and int(inference["success"]["ns"]) > 0
    assert inference["fail"]["count"] == "1"
    assert inference["queue"]["count"] == "3"
    assert int(inference["compute_infer"]["ns"]) > 0
    # queue time is apart from compute time, and neither exceeds the requests' own time
    assert int(inference["compute_infer"]["ns"]) <= int(inference["success"]["ns"])
    assert stats["batch_stats"][0]["batch_size"] == str(digit_batch.shape[0])
    assert v2[0]["version"] == "2" and v2[0]["inference_stats"]["success"]["count"] == "0"
    assert missing.status_code == 404
