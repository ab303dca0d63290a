"""Fixtures every test folder may use: tiny ONNX bundles built in the test, a local registry.

Folder-specific fixtures live in that folder's conftest.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, Registry, TensorSpec
from strato._bundle import make_bundle

DIGIT_LABELS = [str(i) for i in range(10)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_tiny_onnx(path: Path, *, seed: int = 0, hidden: int = 16) -> None:
    """A 784-hidden-10 MLP over 1x28x28 inputs with a dynamic batch axis, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.1, (784, hidden)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = rng.normal(0, 0.5, (hidden, 10)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 10).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(a, n)
            for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build_tiny_bundle(
    root: Path, *, name: str = "tiny", version: str = "1", seed: int = 0
) -> Bundle:
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_onnx(root / "model.onnx", seed=seed)
    return make_bundle(
        root,
        name=name,
        version=version,
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(DIGIT_LABELS),
        opset=17,
        calibration={"temperature": 1.0, "cascade_threshold": 0.8},
    )


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Bundle:
    """A verified bundle `tiny:1` with a random-weight MLP (input 'input', output 'logits')."""
    return build_tiny_bundle(tmp_path / "bundle-src")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def tiny_registry(registry: Registry, tmp_path: Path) -> Registry:
    """A folder registry holding tiny:1 and tiny:2 (different weights), prod → 1."""
    registry.publish(build_tiny_bundle(tmp_path / "v1", version="1", seed=0), alias="prod")
    registry.publish(build_tiny_bundle(tmp_path / "v2", version="2", seed=1))
    return registry


@pytest.fixture
def digit_batch() -> np.ndarray:
    """Four 1x28x28 float32 images in [0, 1]."""
    return np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)


@pytest.fixture(autouse=True)
def _fresh_moto_state():
    """moto keeps its S3 state per process, shared by every ThreadedMotoServer: start clean."""
    yield
    import sys

    if "moto" in sys.modules:
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()


@pytest.fixture
def s3_client():
    """A real boto3 S3 client on a moto server at 127.0.0.1 (free port), stopped after the test."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
    finally:
        server.stop()
