"""The models `benchmarks/quantization.py` measures, built in code (no downloads): the digits MLP and
CNN (trained), a BERT-style encoder from a config (optionally with a planted activation outlier),
a ResNet-style CNN at 3x224x224 and a tabular regressor. Each is a `Case`: the fp32 ONNX file,
its task, calibration and gate rows, targets."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Case", "cnn224_case", "digits_cases", "encoder_case", "regressor_case"]


@dataclass
class Case:
    name: str
    task: str
    fp32: Path
    calibration: dict[str, np.ndarray]
    gate: dict[str, np.ndarray]
    targets: np.ndarray | None
    note: str


def _export(module: Any, example: tuple[Any, ...], path: Path, names: list[str], out: str) -> Path:
    import torch

    axes = {name: {0: "batch"} for name in [*names, out]}
    if names[0] == "input_ids":
        axes |= {n: {0: "batch", 1: "seq"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), example, str(path), input_names=names, output_names=[out],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


def digits_cases(workdir: Path, epochs: int) -> list[Case]:
    from strato_training.data import load_dataset
    from strato_training.export import export_onnx
    from strato_training.trainer import TrainConfig, train

    dataset = load_dataset("digits", seed=0)
    cases = []
    for name in ("mlp", "cnn"):
        result = train(
            TrainConfig(model=name, epochs=epochs, amp=False), dataset=dataset, progress=False
        )
        path = export_onnx(
            result.model, workdir / f"{name}.onnx", input_shape=dataset.input_shape
        ).path
        cases.append(
            Case(name, "classification", path, {"input": dataset.train.x[:256]},
                 {"input": dataset.test.x}, dataset.test.y, f"digits, trained {epochs} epochs")
        )  # fmt: skip
    return cases


def encoder_case(
    workdir: Path, layers: int, hidden: int, rows: int, *, outlier: float = 0.0
) -> Case:
    """A MiniLM-shaped BERT encoder (vocab 30522) from a config, random weights, mean-pooled.
    `outlier`: one feed-forward unit of the last layer always fires at that value (ignored by
    fp32, weighted 0), that layer's feed-forward path weighted 30x: the activation outlier
    trained transformers grow, which per-tensor int8 activations cannot hold."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=hidden * 4, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden_states = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1e-6)

    encoder = Encoder()
    if outlier:
        last = encoder.bert.encoder.layer[-1]
        with torch.no_grad():
            last.intermediate.dense.weight[0].zero_()
            last.intermediate.dense.bias[0] = outlier
            last.output.dense.weight.mul_(30.0)
            last.output.dense.weight[:, 0] = 0.0
    name = "encoder-outlier" if outlier else "encoder"
    ids = torch.randint(1, 30522, (2, 16))
    path = _export(encoder, (ids, torch.ones_like(ids)), workdir / f"{name}.onnx",
                   ["input_ids", "attention_mask"], "sentence")  # fmt: skip
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 30522, (2 * rows, 32)).astype(np.int64)
    mask = np.ones_like(tokens)
    for i, length in enumerate(rng.integers(8, 33, 2 * rows)):
        mask[i, length:] = 0
    feeds = {"input_ids": tokens, "attention_mask": mask}
    half = {k: v[:rows] for k, v in feeds.items()}
    other = {k: v[rows:] for k, v in feeds.items()}
    note = f"BertConfig {layers} layers x {hidden}, vocab 30522, random weights, seq 8-32"
    if outlier:
        note += f"; an activation outlier ({outlier:g}) planted in the last layer's feed-forward"
    return Case(name, "embedding", path, other, half, None, note)


def cnn224_case(workdir: Path, width: int, rows: int) -> Case:
    """A ResNet-style CNN at 3x224x224 (stem, 4 stages of two 3x3 convs, GAP, fc)."""
    import torch
    from torch import nn

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
        )  # fmt: skip

    torch.manual_seed(0)
    w = width
    model = nn.Sequential(
        nn.Conv2d(3, w, 7, 2, 3), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        stage(w, w), stage(w, 2 * w), stage(2 * w, 4 * w), stage(4 * w, 8 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, 100),
    )  # fmt: skip
    path = _export(
        model, (torch.rand(1, 3, 224, 224),), workdir / "cnn224.onnx", ["image"], "logits"
    )
    rng = np.random.default_rng(1)
    images = rng.random((2 * rows, 3, 224, 224), dtype=np.float32)
    note = f"width {w}, random weights: gated on top-1 agreement with fp32 (no labels)"
    return Case(
        "cnn224",
        "classification",
        path,
        {"image": images[rows:]},
        {"image": images[:rows]},
        None,
        note,
    )


def regressor_case(workdir: Path) -> Case:
    """A tabular regressor 64 -> 512 -> 512 -> 1, random weights; targets = fp32 + noise."""
    import torch
    from strato_training.measure import run_outputs
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1)
    )
    path = _export(model, (torch.rand(1, 64),), workdir / "regressor.onnx", ["features"], "value")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1024, 64)).astype(np.float32)
    y = run_outputs(path, {"features": x[:512]})["value"]
    targets = y + rng.normal(scale=0.2 * float(y.std()), size=y.shape)
    note = "synthetic: targets = fp32 prediction + noise (R² of fp32 about 0.96)"
    return Case(
        "regressor", "regression", path, {"features": x[512:]}, {"features": x[:512]}, targets, note
    )
