"""Tiny models of the kinds teams bring, built in code (no hub downloads), for the any-model
tests: a BERT-style sentence encoder (transformers, random weights, mean-pooled), a 3x224x224
CNN, a regressor, a two-output MLP, and an ONNX graph with INT64 and BOOL tensors written with
`onnx.helper`. `strato import any_models:NAME` finds them when tests/e2e is on the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB = 100
HIDDEN = 32


class SentenceEncoder(nn.Module):
    """`BertModel` from a tiny `BertConfig`, mean-pooled over the attention mask."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        self.bert = BertModel(config).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ImageCNN(nn.Module):
    """A small conv net over 3x224x224 images, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=4, padding=3),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))  # type: ignore[no-any-return]


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # type: ignore[no-any-return]


class TwoHeads(nn.Module):
    """One trunk, two outputs returned as a dict: class logits and a score."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.trunk = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.classes = nn.Linear(16, 3)
        self.score = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"class_logits": self.classes(h), "score": torch.sigmoid(self.score(h))}


def encoder_inputs(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - max(1, seq // 3) :] = 0  # one padded sentence
    return {
        "input_ids": rng.integers(1, VOCAB, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
    }


def write_helper_onnx(path: Path) -> None:
    """Inputs x FP32 [batch, 4], ids INT64 [batch, seq], keep BOOL [batch, seq]; outputs
    y FP32 [batch, 3] = x @ W + sum(kept ids), total INT64 [batch, 1], dropped BOOL [batch, seq]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(4).normal(0, 1, (4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Where", ["keep", "ids", "zero"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["total"], keepdims=1),
        helper.make_node("Cast", ["total"], ["total_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "total_f"], ["y"]),
        helper.make_node("Not", ["keep"], ["dropped"]),
    ]
    graph = helper.make_graph(
        nodes,
        "helper",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("total", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("dropped", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.asarray(0, np.int64), "zero"),
            numpy_helper.from_array(np.asarray([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def helper_inputs(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 4)).astype(np.float32),
        "ids": rng.integers(0, 50, (batch, seq)).astype(np.int64),
        "keep": rng.random((batch, seq)) > 0.3,
    }


encoder = SentenceEncoder  # `strato import any_models:encoder` (a class, built with no args)
