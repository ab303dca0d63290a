"""Models for the edge server benchmark, built with onnx.helper (random weights, no torch).

mlp: 784-128-10. cnn: two 3x3 convs (8, 16 channels) + pooling. cnn-heavy: two 3x3 convs
(16, 32 channels) and a VGG-style dense head (6272 -> 2048 -> 10, 51 MB of weights): more than
1 ms per sample at batch 1 on this CPU, dominated by reading weights, which a batch shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

MODELS = ("mlp", "cnn", "cnn-heavy")


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> Any:
    from onnx import numpy_helper

    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    scale = np.sqrt(2.0 / max(fan_in, 1))
    return numpy_helper.from_array((rng.normal(0, scale, shape)).astype(np.float32), name)


def _conv_stack(channels: list[int], pool_after: set[int]) -> tuple[list[Any], list[Any], str, int]:
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes, inits, current, size = [], [], "input", 28
    for i, (cin, cout) in enumerate(zip([1, *channels[:-1]], channels, strict=True)):
        inits += [_init(rng, f"w{i}", (cout, cin, 3, 3)), _init(rng, f"b{i}", (cout,))]
        nodes += [
            helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        current = f"r{i}"
        if i in pool_after:
            nodes.append(
                helper.make_node(
                    "MaxPool", [current], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            current, size = f"p{i}", size // 2
    return nodes, inits, current, channels[-1] * size * size


def build_onnx(kind: str, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    if kind == "mlp":
        nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)]
        inits = [_init(rng, "fc0_w", (784, 128)), _init(rng, "fc0_b", (128,))]
        nodes += [
            helper.make_node("Gemm", ["flat", "fc0_w", "fc0_b"], ["h"]),
            helper.make_node("Relu", ["h"], ["feat"]),
        ]
        current, features = "feat", 128
    else:
        channels, pools = ([8, 16], {0, 1}) if kind == "cnn" else ([16, 32], {1})
        nodes, inits, current, features = _conv_stack(channels, pools)
        nodes.append(helper.make_node("Flatten", [current], ["feat"], axis=1))
        current = "feat"
        if kind == "cnn-heavy":  # a VGG-style dense head: 12.8 M weights read per run
            inits += [_init(rng, "fc_w", (features, 2048)), _init(rng, "fc_b", (2048,))]
            nodes += [
                helper.make_node("Gemm", [current, "fc_w", "fc_b"], ["fc"]),
                helper.make_node("Relu", ["fc"], ["fc_r"]),
            ]
            current, features = "fc_r", 2048
    inits += [_init(rng, "out_w", (features, 10)), _init(rng, "out_b", (10,))]
    nodes.append(helper.make_node("Gemm", [current, "out_w", "out_b"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_registry(root: Path) -> dict[str, Path]:
    """Publish the three models into a folder registry; returns name -> ONNX path."""
    from strato import Registry, TensorSpec
    from strato._bundle import make_bundle

    registry = Registry(root)
    paths = {}
    for kind in MODELS:
        if kind not in registry.models():
            source = root.parent / f"src-{kind}"
            source.mkdir(parents=True, exist_ok=True)
            build_onnx(kind, source / "model.onnx")
            bundle = make_bundle(
                source,
                name=kind,
                version="1",
                inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
                outputs=[TensorSpec("logits", "FP32", (-1, 10))],
                artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
                labels=tuple(str(i) for i in range(10)),
                opset=17,
            )
            registry.publish(bundle, alias="prod")
        paths[kind] = root / kind / "1" / "model.onnx"
    return paths
