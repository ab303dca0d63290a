"""Every route of the edge server over real HTTP, with JSON and binary bodies."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine

pytestmark = pytest.mark.timeout(120)


def _infer(client, path, inputs, *, binary, **kwargs):
    body, length = encode_request(inputs, binary=binary, binary_outputs=binary, **kwargs)
    headers = {HEADER_LENGTH: str(length)} if length is not None else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    raw = response.headers.get(HEADER_LENGTH)
    return response, decode_response(response.content, header_length=int(raw) if raw else None)


def test_health_and_server_metadata(tiny_server):
    with tiny_server.client() as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").json() == {"ready": True}
        meta = http.get("/v2").json()
        assert meta["name"] == "strato-edge"
        assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_carries_strato_parameters(tiny_server):
    with tiny_server.client() as http:
        response = http.get("/v2/models/tiny")
        assert response.status_code == 200
        meta = response.json()
        assert response.headers["X-Strato-Model-Version"] == "1"  # prod -> 1
        assert response.headers["X-Strato-Precision"] == "fp32"
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
        assert meta["parameters"]["labels"] == [str(i) for i in range(10)]
        assert meta["parameters"]["calibration"]["cascade_threshold"] == 0.8
        versioned = http.get("/v2/models/tiny/versions/2")
        assert versioned.headers["X-Strato-Model-Version"] == "2"
        assert http.get("/v2/models/tiny/ready").status_code == 200
        assert http.get("/v2/models/tiny/versions/2/ready").json()["ready"] is True
        assert http.get("/v2/models/tiny/versions/9/ready").status_code == 404
        assert http.post("/v2/repository/index").json() == [
            {"name": "tiny", "version": "1", "state": "READY"}
        ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_the_local_engine(tiny_server, tiny_registry, digit_batch, binary):
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    with tiny_server.client() as http:
        response, decoded = _infer(
            http, "/v2/models/tiny/infer", {"input": digit_batch}, binary=binary, id="req-7"
        )
    assert (HEADER_LENGTH in response.headers) is binary
    assert response.headers["X-Strato-Model-Version"] == "1"
    assert decoded.model_name == "tiny" and decoded.model_version == "1" and decoded.id == "req-7"
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_versioned_infer_uses_that_version(tiny_server, tiny_registry, digit_batch):
    expected = load_engine(tiny_registry.open("tiny:2")).infer({"input": digit_batch})["logits"]
    with tiny_server.client() as http:
        response, decoded = _infer(
            http, "/v2/models/tiny/versions/2/infer", {"input": digit_batch}, binary=True
        )
    assert response.headers["X-Strato-Model-Version"] == "2"
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_requested_outputs_choose_json_or_binary_per_output(tiny_server, digit_batch):
    body, length = encode_request(
        {"input": digit_batch}, binary=False, outputs=["logits"], binary_outputs=False
    )
    with tiny_server.client() as http:
        response = http.post("/v2/models/tiny/infer", content=body)
        assert HEADER_LENGTH not in response.headers
        assert response.json()["outputs"][0]["shape"] == [4, 10]
        body, length = encode_request({"input": digit_batch}, binary=True, outputs=["logits"])
        response = http.post(
            "/v2/models/tiny/infer", content=body, headers={HEADER_LENGTH: str(length)}
        )
        assert int(response.headers[HEADER_LENGTH]) < len(response.content)


def test_metrics_count_requests_latency_batches_and_queue(tiny_server, digit_batch):
    with tiny_server.client() as http:
        _infer(http, "/v2/models/tiny/infer", {"input": digit_batch}, binary=True)
        http.post("/v2/models/tiny/infer", content=b"{")
        text = http.get("/metrics").text
    served = 'model="tiny",version="1",precision="fp32"'
    assert f'strato_edge_requests_total{{{served},status="200"}} 1' in text
    assert f'strato_edge_requests_total{{{served},status="400"}} 1' in text
    assert 'strato_edge_request_duration_seconds_count{model="tiny",version="1"} 2' in text
    assert 'strato_edge_batch_size_bucket{model="tiny",le="4"} 1' in text
    assert 'strato_edge_queue_depth{model="tiny"} 0' in text
    # queue time and compute time are apart; the build and the process are described
    assert 'strato_edge_compute_duration_seconds_count{model="tiny",version="1"} 1' in text
    assert 'strato_edge_queue_duration_seconds_count{model="tiny",version="1"} 1' in text
    assert re.search(r'^strato_build_info\{version="[^"]+",python="[^"]+"\} 1$', text, re.M)
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert re.search(rf"^{family} [0-9.]+$", text, re.M), family


def test_token_guards_every_route_but_health(tiny_registry, edge_server, digit_batch):
    from pathlib import Path

    server = edge_server(Path(tiny_registry.url), token="s3cret")
    body, length = encode_request({"input": digit_batch})
    headers = {HEADER_LENGTH: str(length)}
    with server.client() as http:
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/ping").status_code == 200
        for method, path in [
            ("GET", "/v2"),
            ("GET", "/v2/models/tiny"),
            ("GET", "/v2/models/tiny/ready"),
            ("GET", "/metrics"),
            ("POST", "/v2/repository/index"),
        ]:
            response = http.request(method, path)
            assert response.status_code == 401, path
            assert "error" in response.json()
        assert http.post("/v2/models/tiny/infer", content=body, headers=headers).status_code == 401
        wrong = {**headers, "Authorization": "Bearer nope"}
        assert http.post("/v2/models/tiny/infer", content=body, headers=wrong).status_code == 401
        good = {**headers, "Authorization": "Bearer s3cret"}
        assert http.post("/v2/models/tiny/infer", content=body, headers=good).status_code == 200
        assert http.get("/v2/models/tiny", headers=good).status_code == 200


def test_public_bind_needs_a_token():
    from strato._errors import ConfigError
    from strato_edge.config import ServeConfig

    with pytest.raises(ConfigError, match="token"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", token="t").token == "t"
    assert ServeConfig(host="0.0.0.0", insecure=True).insecure
    assert ServeConfig(host="::1").host == "::1"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_strato_client_through_the_edge_transport(tiny_registry, edge_server, digit_batch, binary):
    """The SDK's own `Edge` transport against the daemon, with a token, both body formats."""
    from pathlib import Path

    from strato import Client, Edge

    server = edge_server(Path(tiny_registry.url), token="tok")
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    with Client(edge=Edge(server.url, token="tok", binary=binary)) as client:
        pred = client.predict("tiny", digit_batch)
    assert pred.served_by == "edge"
    assert (pred.model_name, pred.model_version, pred.precision) == ("tiny", "1", "fp32")
    np.testing.assert_allclose(pred.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_engine_out_of_memory_is_503_not_400(tmp_path, edge_server):
    """ONNX Runtime failing to allocate on a valid request is the server's fault (503)."""
    from support import build_oom_bundle

    server = edge_server(build_oom_bundle(tmp_path / "oom").root)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
    with server.client() as http:
        response = http.post("/v2/models/oom/infer", json=body)
        assert response.status_code == 503, response.text
        assert "ONNX Runtime failed" in response.json()["error"]
        assert "/onnxruntime_src" not in response.text
        assert http.get("/v2/health/ready").status_code == 200


# --- issue 10, item 12: the small server-side holes ------------------------------------------


def test_dot_dot_model_names_neither_list_the_parent_nor_leak_paths(tiny_server, tmp_path):
    # tmp_path holds v1/ and v2/ (the bundles' sources, each with a manifest.json): a server
    # that looked up `..` inside the store would list them as "versions".
    with tiny_server.client() as http:
        for path in (
            "/v2/models/%2e%2e/versions/X",
            "/v2/models/%2e%2e",
            "/v2/models/%2e%2e/ready",
            "/v2/models/tiny/versions/%2e%2e",
            "/v2/models/tiny/versions/%2e%2e/ready",
        ):
            response = http.get(path)
            assert response.status_code == 404, (path, response.text)
            assert "v1" not in response.text and "v2" not in response.text, response.text
            assert str(tmp_path) not in response.text
        response = http.post("/v2/models/%2e%2e/versions/1/infer", content=b"{}")
        assert response.status_code == 404 and str(tmp_path) not in response.text


def _tamper(registry, version: str) -> Path:
    artifact = Path(registry.url) / "tiny" / version / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"tampered")
    return artifact


def test_a_broken_version_is_not_rehashed_on_every_request(tiny_registry, edge_server, tmp_path):
    artifact = _tamper(tiny_registry, "2")
    server = edge_server(Path(tiny_registry.url))
    with server.client() as http:
        first = http.get("/v2/models/tiny/versions/2")
        assert first.status_code == 503 and "sha256" in first.json()["error"], first.text
        assert str(tmp_path) not in first.text
        # Were the version checked again, the error would now say the file is missing.
        artifact.unlink()
        for _ in range(3):
            again = http.get("/v2/models/tiny/versions/2")
            assert (again.status_code, again.json()) == (503, first.json())
        assert http.get("/v2/models/tiny/versions/1").status_code == 200


def test_loaded_versions_are_bounded_least_recently_used(tmp_path, edge_server, registry):
    from support import build_tiny_bundle

    for version in ("1", "2", "3", "4"):
        alias = "prod" if version == "1" else None
        registry.publish(build_tiny_bundle(tmp_path / f"v{version}", version=version), alias=alias)
    server = edge_server(Path(registry.url), max_loaded_versions=2)
    with server.client() as http:
        for version in ("2", "3", "4", "2"):
            assert http.get(f"/v2/models/tiny/versions/{version}/ready").status_code == 200
        # served 1 stays; of the others only the two most recent (4, then 2 again) stay
        assert server.edge.store.loaded() == ["tiny:1", "tiny:2", "tiny:4"]
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}
            ]
        }
        assert http.post("/v2/models/tiny/versions/3/infer", json=body).status_code == 200
        assert server.edge.store.loaded() == ["tiny:1", "tiny:2", "tiny:3"]
        assert http.get("/v2/models/tiny").headers["X-Strato-Model-Version"] == "1"


def test_non_ascii_tokens_match_byte_for_byte(tiny_registry, edge_server):
    token = "pässwörd-🔑"
    server = edge_server(Path(tiny_registry.url), token=token)
    with server.client() as http:
        good = {"Authorization": b"Bearer " + token.encode("utf-8")}
        assert http.get("/v2/models/tiny", headers=good).status_code == 200
        bad = {"Authorization": b"Bearer " + "pässwörd-🔒".encode()}
        assert http.get("/v2/models/tiny", headers=bad).status_code == 401
        latin = {"Authorization": b"Bearer " + "pässwörd".encode("latin-1")}
        assert http.get("/v2/models/tiny", headers=latin).status_code == 401


def test_serve_reads_the_token_from_a_file(tiny_registry, tmp_path):
    from support import free_port
    from support.servers import edge_server as edge_process

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-ü\n")
    port = free_port()
    proc = edge_process(
        Path(tiny_registry.url), port, tmp_path / "log", "--token-file", str(token_file)
    )
    proc.start()
    try:
        assert "s3cret" not in " ".join(proc.args)
        import httpx

        with httpx.Client(base_url=proc.url, timeout=10) as http:
            assert http.get("/v2/models/tiny").status_code == 401
            auth = {"Authorization": b"Bearer " + "s3cret-ü".encode()}
            assert http.get("/v2/models/tiny", headers=auth).status_code == 200
    finally:
        proc.stop()


def test_token_file_problems_are_clear_errors(tmp_path):
    from strato import ConfigError
    from strato_edge.config import read_token_file

    (tmp_path / "empty").write_text("\n")
    for path in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(ConfigError):
            read_token_file(path)


def test_a_repeated_id_and_body_is_answered_once_other_bodies_run(tiny_server, digit_batch):
    """The outbox resends with its idempotency key as the OIP id: the daemon runs it once."""

    def runs(http):
        stats = http.get("/v2/models/tiny/stats").json()["model_stats"]
        return sum(int(entry["inference_count"]) for entry in stats)

    with tiny_server.client() as http:
        before = runs(http)
        first, again = (
            _infer(http, "/v2/models/tiny/infer", {"input": digit_batch[:1]}, binary=True, id="k1")
            for _ in range(2)
        )
        np.testing.assert_array_equal(first[1].outputs["logits"], again[1].outputs["logits"])
        assert runs(http) == before + 1
        assert "strato_edge_replayed_requests_total 1" in http.get("/metrics").text
        # the same id with other inputs (a client reusing ids) is a new request
        _infer(http, "/v2/models/tiny/infer", {"input": digit_batch[1:2]}, binary=True, id="k1")
        assert runs(http) == before + 2
