"""Payload limits end to end: a two-input int64 batch far over Lambda's 6,291,456-byte invoke
limit, through `Client(edge=Edge(...), cloud=Lambda(...))` with the edge daemon SIGKILLed, is
answered by the real Lambda emulator in several invokes, each under the limit, merged in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato import (
    Bundle,
    Client,
    Edge,
    InferRequest,
    InvalidInput,
    Lambda,
    Local,
    Registry,
    Retry,
    TensorSpec,
    make_bundle,
)
from support.servers import cloud_emulator, edge_server, free_port

pytestmark = pytest.mark.timeout(300)

SEQ = 64  # int64 tokens per row, two inputs: 1,024 bytes a row


def two_input_bundle(root: Path) -> Path:
    """pooled = sum(input_ids * attention_mask) per row, as an ONNX graph built here."""
    import onnx
    from onnx import TensorProto, helper

    root.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
            helper.make_node("Cast", ["masked"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["as_float", "axes"], ["pooled"], keepdims=1),
        ],
        "pool",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, root / "model.onnx")
    make_bundle(
        root,
        name="pool",
        version="1",
        inputs=[
            TensorSpec("input_ids", "INT64", (-1, -1)),
            TensorSpec("attention_mask", "INT64", (-1, -1)),
        ],
        outputs=[TensorSpec("pooled", "FP32", (-1, 1))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        task="regression",
        opset=17,
    )
    return root


def test_a_batch_over_the_lambda_limit_is_split_for_the_cloud_when_the_edge_dies(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.publish(Bundle.load(two_input_bundle(tmp_path / "pool")), alias="prod")
    edge = edge_server(Path(registry.url), free_port(), tmp_path / "edge.log").start()
    cloud = cloud_emulator(f"{registry.url}/pool@prod", free_port(), tmp_path / "cloud.log")
    cloud.start()
    rng = np.random.default_rng(0)
    rows = 10_000  # 10.24 MB of tensors: base64 in one invoke would be 13.7 MB
    inputs = {
        "input_ids": rng.integers(0, 30_000, (rows, SEQ), dtype=np.int64),
        "attention_mask": (rng.random((rows, SEQ)) < 0.7).astype(np.int64),
    }
    expected = Local(registry).infer(InferRequest("pool", dict(inputs))).outputs["pooled"]
    try:
        client = Client(
            edge=Edge(edge.url),
            cloud=Lambda("strato-infer", endpoint_url=cloud.url),
            retry=Retry(attempts=2, base_ms=1, cap_ms=5),
            timeout=120,
        )
        small = {k: v[:3] for k, v in inputs.items()}
        assert client.predict("pool", small).tier == "edge"
        edge.kill()
        pred = client.predict("pool", inputs)
        budget = client.backends[1].transport.max_tensor_bytes(2)
        per_request = budget // (SEQ * 16)  # rows of 1,024 bytes under the base64 budget
        chunks = -(-rows // per_request)
        assert chunks == 3
        assert (pred.tier, pred.served_by, pred.route_reason) == (
            "cloud",
            "lambda",
            "edge-unavailable→cloud",
        )
        assert pred.attempts == 2 + chunks  # two edge tries, then one invoke per chunk
        np.testing.assert_array_equal(pred.outputs["pooled"], expected)
        one_row = {k: np.zeros((1, 400_000), np.int64) for k in inputs}  # 6.4 MB in one row
        with pytest.raises(InvalidInput, match="6,291,456"):
            client.predict("pool", one_row)
    finally:
        edge.stop()
        cloud.stop()
