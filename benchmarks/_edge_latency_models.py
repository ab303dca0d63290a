"""The two models of benchmarks/edge_latency.py: the demo-sized MLP and a 602 KB image input."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from _edge_models import build_onnx

if TYPE_CHECKING:
    from pathlib import Path


def build_image_onnx(path: Path) -> None:
    """3x224x224 → global average pool → 10 logits: the bytes, not the maths, dominate."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    weights = numpy_helper.from_array(rng.normal(0, 0.5, (3, 10)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build_registry(root: Path) -> dict[str, np.ndarray]:
    """mlp and image in a folder registry; returns one batch-1 input per model."""
    from strato import Registry, TensorSpec, make_bundle

    registry = Registry(root / "registry")
    shapes = {"mlp": (1, 1, 28, 28), "image": (1, 3, 224, 224)}
    for name, shape in shapes.items():
        source = root / f"src-{name}"
        source.mkdir(parents=True)
        if name == "mlp":
            build_onnx("mlp", source / "model.onnx")
        else:
            build_image_onnx(source / "model.onnx")
        bundle = make_bundle(
            source,
            name=name,
            version="1",
            inputs=[TensorSpec("input", "FP32", (-1, *shape[1:]))],
            outputs=[TensorSpec("logits", "FP32", (-1, 10))],
            artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
            labels=tuple(str(i) for i in range(10)),
            opset=17,
        )
        registry.publish(bundle, alias="prod")
    rng = np.random.default_rng(0)
    return {name: rng.random(shape, dtype=np.float32) for name, shape in shapes.items()}
