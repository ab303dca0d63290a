"""SageMaker hosting contract: /ping, /invocations with JSON and the binary content type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato import Registry
from strato._codec import SAGEMAKER_BINARY, decode_response, encode_request, header_length_from
from strato._engines import load_engine
from support import build_tiny_bundle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sagemaker_server(tiny_bundle, edge_server):
    """A SageMaker model directory: ONE bundle, manifest.json at its root."""
    return edge_server(tiny_bundle.root, sagemaker=True)


def test_ping(sagemaker_server):
    with sagemaker_server.client() as http:
        assert http.get("/ping").status_code == 200


def test_invocations_json(sagemaker_server, tiny_bundle, digit_batch):
    expected = load_engine(tiny_bundle).infer({"input": digit_batch})["logits"]
    body, length = encode_request({"input": digit_batch}, binary=False, binary_outputs=False)
    assert length is None
    with sagemaker_server.client() as http:
        response = http.post(
            "/invocations", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["X-Strato-Model-Version"] == "1"
    decoded = decode_response(response.content)
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_invocations_binary_content_type(sagemaker_server, tiny_bundle, digit_batch):
    expected = load_engine(tiny_bundle).infer({"input": digit_batch})["logits"]
    body, length = encode_request({"input": digit_batch})
    content_type = f"{SAGEMAKER_BINARY};json-header-size={length}"
    with sagemaker_server.client() as http:
        response = http.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(SAGEMAKER_BINARY)
    length = header_length_from(response.headers)
    assert length is not None and length < len(response.content)
    decoded = decode_response(response.content, header_length=length)
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_invocations_bad_input_is_400(sagemaker_server):
    with sagemaker_server.client() as http:
        response = http.post("/invocations", content=b"nope")
        assert response.status_code == 400 and "error" in response.json()
        bad = f"{SAGEMAKER_BINARY};json-header-size=100000"
        response = http.post("/invocations", content=b"{}", headers={"Content-Type": bad})
        assert response.status_code == 400


def test_target_model_header_picks_among_several(tmp_path, edge_server, digit_batch):
    registry = Registry(tmp_path / "models")
    registry.publish(build_tiny_bundle(tmp_path / "a", name="alpha", seed=0))
    registry.publish(build_tiny_bundle(tmp_path / "b", name="beta", seed=1))
    server = edge_server(Path(registry.url), sagemaker=True)
    body, _length = encode_request({"input": digit_batch}, binary=False, binary_outputs=False)
    with server.client() as http:
        response = http.post("/invocations", content=body)
        assert response.status_code == 400
        assert "X-Amzn-SageMaker-Target-Model" in response.json()["error"]
        for name in ("alpha", "beta.tar.gz"):
            response = http.post(
                "/invocations", content=body, headers={"X-Amzn-SageMaker-Target-Model": name}
            )
            assert response.status_code == 200, response.text
            assert decode_response(response.content).model_name == name.split(".")[0]
        missing = http.post(
            "/invocations", content=body, headers={"X-Amzn-SageMaker-Target-Model": "gamma"}
        )
        assert missing.status_code == 404
