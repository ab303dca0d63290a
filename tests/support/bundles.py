"""Tiny models built in the test: an ONNX MLP with random weights and the bundle around it."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from strato import Bundle, TensorSpec
from strato._bundle import make_bundle

__all__ = ["DIGIT_LABELS", "build_tiny_bundle", "free_port", "write_tiny_onnx"]

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


def write_oom_onnx(path: Path) -> None:
    """y = x + sum(zeros(4 Mi x 4 Mi x rows)): a valid request makes ONNX Runtime allocate
    64 TiB. The shape comes from the input's shape, so no constant folding happens at load."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Mul", ["shape", "big"], ["huge"]),
        helper.make_node(
            "ConstantOfShape",
            ["huge"],
            ["zeros"],
            value=numpy_helper.from_array(np.array([0], np.float32)),
        ),
        helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0),
        helper.make_node("Add", ["input", "total"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "oom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array([1 << 22, 1 << 22], np.int64), "big")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build_oom_bundle(root: Path, *, name: str = "oom", version: str = "1") -> Bundle:
    root.mkdir(parents=True, exist_ok=True)
    write_oom_onnx(root / "model.onnx")
    return make_bundle(
        root,
        name=name,
        version=version,
        inputs=[TensorSpec("input", "FP32", (-1, 4))],
        outputs=[TensorSpec("output", "FP32", (-1, 4))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        opset=17,
    )


def write_poison_onnx(path: Path) -> None:
    """y = x + sum(zeros(max(x) x 1 Mi)): inputs under 1 run at once; a row holding 1e7 makes
    ONNX Runtime allocate 40 TB (an engine failure, 503, on an otherwise valid request)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMax", ["input"], ["top"], keepdims=0),
        helper.make_node("Cast", ["top"], ["rows"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["rows", "one"], ["rows1"]),
        helper.make_node("Concat", ["rows1", "width"], ["shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["zeros"],
            value=numpy_helper.from_array(np.array([0], np.float32)),
        ),
        helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0),
        helper.make_node("Add", ["input", "total"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "poison",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([1 << 20], np.int64), "width"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build_poison_bundle(root: Path, *, name: str = "poison", version: str = "1") -> Bundle:
    root.mkdir(parents=True, exist_ok=True)
    write_poison_onnx(root / "model.onnx")
    return make_bundle(
        root,
        name=name,
        version=version,
        inputs=[TensorSpec("input", "FP32", (-1, 4))],
        outputs=[TensorSpec("output", "FP32", (-1, 4))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        opset=17,
    )
