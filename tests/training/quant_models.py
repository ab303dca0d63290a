"""Tiny ONNX models built in code for the quantization and gate tests (no downloads).

- `write_dense`: MatMul/Add/Relu layers with named nodes, any number of inputs (summed after
  their first layer) and outputs (one head per output), so one builder gives a classifier, an
  embedder, a regressor and a two-output model.
- `write_bert_encoder`: a BERT-style encoder (transformers.BertConfig, random weights),
  mean-pooled, with two int64 inputs, exported with dynamic batch and sequence axes.
- `perturbed`: a copy of a model with its float weights perturbed (a deliberately broken
  artifact for the gates to catch).
- `publish_model`: a bundle for a model file with the given task, published to a registry.
"""

from __future__ import annotations

import itertools
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from strato import Registry, TensorSpec
from strato._bundle import make_bundle


def dense_layers(
    seed: int, sizes: list[int], *, scale: float = 0.3
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(0, scale, (a, b)).astype(np.float32),
            rng.normal(0, 0.1, b).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def write_dense(
    path: Path,
    *,
    inputs: dict[str, int],
    trunk: list[tuple[np.ndarray, np.ndarray]],
    heads: dict[str, tuple[np.ndarray, np.ndarray]],
    first: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """inputs name → features; each input goes through its own first layer (`first`), the
    results are summed, go through `trunk` (MatMul+Add+Relu each) and one `heads` layer per
    output (no activation)."""
    nodes, inits = [], []

    def layer(name: str, x: str, w: np.ndarray, b: np.ndarray, relu: bool) -> str:
        inits.extend(
            [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        )
        nodes.append(
            helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=f"{name}/MatMul")
        )
        out = f"{name}.out"
        nodes.append(
            helper.make_node(
                "Add",
                [f"{name}.mm", f"{name}.b"],
                [out if not relu else f"{name}.pre"],
                name=f"{name}/Add",
            )
        )
        if relu:
            nodes.append(helper.make_node("Relu", [f"{name}.pre"], [out], name=f"{name}/Relu"))
        return out

    first = first or {}
    branches = []
    for name in inputs:
        if name in first:
            branches.append(layer(f"in_{name}", name, *first[name], relu=True))
        else:
            branches.append(name)
    x = branches[0]
    for i, other in enumerate(branches[1:]):
        nodes.append(helper.make_node("Add", [x, other], [f"sum{i}"], name=f"sum{i}"))
        x = f"sum{i}"
    for i, (w, b) in enumerate(trunk):
        x = layer(f"trunk{i}", x, w, b, relu=True)
    for name, (w, b) in heads.items():
        out = layer(f"head_{name}", x, w, b, relu=False)
        nodes.append(helper.make_node("Identity", [out], [name], name=f"{name}/Identity"))
    graph = helper.make_graph(
        nodes,
        "dense",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", f])
            for n, f in inputs.items()
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", w.shape[1]])
            for n, (w, _) in heads.items()
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def perturbed(
    source: Path, target: Path, *, relative: float, seed: int = 1, only: str = ""
) -> Path:
    """`source` with every float weight matrix (whose name starts with `only`) multiplied by
    (1 + relative * N(0, 1))."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 2 and init.name.startswith(only):
            noisy = array * (1 + relative * rng.standard_normal(array.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    onnx.save(model, str(target))
    return target


def write_bert_encoder(
    path: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0, outlier: float = 0.0
) -> Path:
    """A mean-pooled BERT-style encoder with random weights: inputs `input_ids`,
    `attention_mask` (int64, [batch, seq]), output `sentence` ([batch, hidden]).
    `outlier` > 0 plants an activation outlier the way trained transformers grow them: one
    feed-forward unit of the last layer always fires at `outlier` (its output weights are 0, so
    fp32 ignores it), that layer's feed-forward output weighs 30x more, and per-tensor int8
    activations of its output MatMul lose every other unit."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False).eval()

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden_states = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            summed = (hidden_states.last_hidden_state * mask).sum(1)
            return summed / mask.sum(1).clamp(min=1e-6)

    encoder = Encoder().eval()
    if outlier:
        last = encoder.bert.encoder.layer[-1]
        with torch.no_grad():
            last.intermediate.dense.weight[0].zero_()
            last.intermediate.dense.bias[0] = outlier
            last.output.dense.weight.mul_(30.0)  # the feed-forward path carries the output
            last.output.dense.weight[:, 0] = 0.0
    ids = torch.randint(0, 100, (2, 8))
    axes = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning
        torch.onnx.export(
            encoder,
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "sentence": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def token_batch(rows: int, seq: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 100, (rows, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::3, seq * 2 // 3 :] = 0  # some shorter sentences, padded
    return {"input_ids": ids, "attention_mask": mask}


def publish_model(
    registry: Registry,
    source: Path,
    root: Path,
    *,
    name: str,
    task: str,
    labels: tuple[str, ...] = (),
) -> str:
    """Publish `source` as `name:1` with the signature read from the graph."""
    model = onnx.load(str(source))
    datatypes = {TensorProto.FLOAT: "FP32", TensorProto.INT64: "INT64"}

    def specs(values: Any) -> list[TensorSpec]:
        found = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            found.append(TensorSpec(value.name, datatypes[tensor.elem_type], shape))
        return found

    root.mkdir(parents=True)
    shutil.copyfile(source, root / "model.onnx")
    bundle = make_bundle(
        root,
        name=name,
        version="1",
        inputs=specs(model.graph.input),
        outputs=specs(model.graph.output),
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=labels,
        task=task,
        opset=17,
    )
    registry.publish(bundle)
    return f"{name}:1"
