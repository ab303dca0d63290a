"""An outside client: NVIDIA's tritonclient[http] from PyPI against the edge server."""

from __future__ import annotations

import numpy as np
import pytest
from strato._engines import load_engine

pytestmark = pytest.mark.timeout(120)

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")


@pytest.fixture
def triton(tiny_server):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{tiny_server.port}")
    yield client
    client.close()


def test_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("tiny")
    assert not triton.is_model_ready("nope")
    meta = triton.get_model_metadata("tiny")
    assert meta["name"] == "tiny"
    assert meta["inputs"][0]["name"] == "input"
    assert meta["outputs"][0]["datatype"] == "FP32"
    assert triton.get_server_metadata()["name"] == "strato-edge"
    assert triton.get_model_metadata("tiny", model_version="2")["parameters"]["version"] == "2"


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(True, True), (False, False), (True, False), (False, True)],
    ids=["bin-bin", "json-json", "bin-json", "json-bin"],
)
def test_infer_equals_local_engine(triton, tiny_registry, digit_batch, binary_in, binary_out):
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    given = httpclient.InferInput("input", list(digit_batch.shape), "FP32")
    given.set_data_from_numpy(digit_batch, binary_data=binary_in)
    wanted = httpclient.InferRequestedOutput("logits", binary_data=binary_out)
    result = triton.infer("tiny", [given], outputs=[wanted], request_id="abc")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "1"
    assert response["id"] == "abc"


def test_infer_without_named_outputs_and_with_version(triton, tiny_registry, digit_batch):
    expected = load_engine(tiny_registry.open("tiny:2")).infer({"input": digit_batch})["logits"]
    given = httpclient.InferInput("input", list(digit_batch.shape), "FP32")
    given.set_data_from_numpy(digit_batch)  # tritonclient's default: binary in, binary out
    result = triton.infer("tiny", [given], model_version="2")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)


def test_bad_input_is_an_inference_server_exception(triton):
    from tritonclient.utils import InferenceServerException

    given = httpclient.InferInput("image", [1, 1, 28, 28], "FP32")
    given.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match="image"):
        triton.infer("tiny", [given])
    with pytest.raises(InferenceServerException, match="not served"):
        triton.infer("nope", [given])
