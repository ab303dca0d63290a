"""A test per task: the manifest's task picks the gate; the gate passes the good int8 artifact and
catches a deliberately broken one (weights perturbed, or an activation outlier int8 cannot hold).
Models are built in code: dense ONNX graphs and a tiny BERT-style encoder with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quant_models import (
    dense_layers,
    perturbed,
    publish_model,
    token_batch,
    write_bert_encoder,
    write_dense,
)
from strato import QuantizationError, Registry
from strato_training.gates import gate_outputs
from strato_training.measure import run_outputs
from strato_training.optimize import quantize_bundle
from strato_training.quantize_data import QuantizeData


def _gate_file(task: str, fp32: Path, artifact: Path, data: QuantizeData):  # type: ignore[no-untyped-def]
    return gate_outputs(
        task, run_outputs(fp32, data.gate), run_outputs(artifact, data.gate), targets=data.targets
    )


def _outlier_trunk(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two trunk layers where the first has one dead unit always at 1e4 (weights 0, bias 1e4)
    that the second ignores: per-tensor int8 activations of the second layer round every real
    unit to 0. Only that layer is sensitive."""
    (w1, b1), (w2, b2) = dense_layers(seed, [8, 24, 16])
    w1[:, 0], b1[0], w2[0, :] = 0.0, 1e4, 0.0
    return [(w1, b1), (w2, b2)]


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)


def test_classification_gate(tmp_path: Path, rows: np.ndarray) -> None:
    trunk = dense_layers(0, [8, 32, 32])
    head = dense_layers(1, [32, 5], scale=3.0)[0]  # clear margins between classes
    model = write_dense(tmp_path / "cls.onnx", inputs={"x": 8}, trunk=trunk, heads={"logits": head})
    logits = run_outputs(model, rows)["logits"]
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = rows[top2[:, 1] - top2[:, 0] > 0.5]  # rows fp32 decides clearly, not near-ties
    labels = logits[top2[:, 1] - top2[:, 0] > 0.5].argmax(axis=1)  # fp32 is right by construction
    registry = Registry(tmp_path / "registry")
    publish_model(registry, model, tmp_path / "src", name="cls", task="classification")
    data = QuantizeData.from_arrays({"x": clear}, labels)
    _, summary = quantize_bundle(registry, "cls:1", data=data, modes=("int8-dynamic",))
    good = summary["artifacts"]["model.int8.dynamic.onnx"]
    assert good["gate"] == "passed" and good["gate_task"] == "classification"
    assert good["accuracy_drop_points"] <= 1.0 and good["agreement"] >= 0.97
    broken = perturbed(model, tmp_path / "broken.onnx", relative=0.8)
    result = _gate_file("classification", model, broken, data)
    assert not result.passed
    assert result.worst.figure in ("accuracy_drop_points", "agreement")
    assert result.worst.output == "logits" and result.worst.row is not None


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert_encoder(tmp_path_factory.mktemp("bert") / "encoder.onnx")


def test_embedding_gate_on_a_bert_style_encoder(tmp_path: Path, encoder: Path) -> None:
    registry = Registry(tmp_path / "registry")
    publish_model(registry, encoder, tmp_path / "src", name="enc", task="embedding")
    data = QuantizeData.from_arrays(token_batch(40))
    _, summary = quantize_bundle(registry, "enc:1", data=data)  # auto
    dynamic = summary["artifacts"]["model.int8.dynamic.onnx"]
    assert dynamic["gate"] == "passed" and dynamic["gate_task"] == "embedding"
    assert dynamic["cosine_min"] >= 0.99 and dynamic["neighbour_agreement"] >= 0.9
    assert "accuracy" not in dynamic
    assert dynamic["size_ratio"] < 0.9  # MatMul weights int8; the embedding tables stay fp32
    # Two int64 inputs went through calibration (QDQ) and the gate.
    assert "model.int8.qdq.onnx" in {**summary["artifacts"], **summary["refused"]}
    broken = perturbed(encoder, tmp_path / "broken.onnx", relative=1.0)
    result = _gate_file("embedding", encoder, broken, data)
    assert not result.passed
    assert result.worst.figure.startswith("cosine") or result.worst.figure == "neighbour_agreement"
    assert result.worst.output == "sentence"
    assert result.figures["sentence"]["cosine_min"] < 0.99


def test_regression_gate_reports_relative_error_not_accuracy(
    tmp_path: Path, rows: np.ndarray
) -> None:
    trunk = dense_layers(2, [8, 16])
    head = dense_layers(3, [16, 2])[0]
    model = write_dense(tmp_path / "reg.onnx", inputs={"x": 8}, trunk=trunk, heads={"y": head})
    targets = run_outputs(model, rows)["y"] + np.random.default_rng(4).normal(0, 0.05, (200, 2))
    registry = Registry(tmp_path / "registry")
    publish_model(registry, model, tmp_path / "src", name="reg", task="regression")
    data = QuantizeData.from_arrays({"x": rows}, targets)
    _, summary = quantize_bundle(registry, "reg:1", data=data, modes=("int8-dynamic",))
    good = summary["artifacts"]["model.int8.dynamic.onnx"]
    assert good["gate"] == "passed" and good["gate_figure"] in (
        "relative_error",
        "r2_drop",
        "mae_increase",
    )
    assert good["relative_error"] < 0.02 and "accuracy" not in good and "agreement" not in good
    assert good["r2"] == pytest.approx(good["reference_r2"], abs=0.01)

    # int8 that really breaks a regressor is refused, by the regression figures.
    sabotaged = write_dense(
        tmp_path / "fragile.onnx", inputs={"x": 8}, trunk=_outlier_trunk(5), heads={"y": head}
    )
    publish_model(registry, sabotaged, tmp_path / "src2", name="fragile", task="regression")
    noise = np.random.default_rng(6).normal(0, 0.05, (200, 2))
    targets = run_outputs(sabotaged, rows)["y"] + noise
    data = QuantizeData.from_arrays({"x": rows}, targets)
    with pytest.raises(QuantizationError, match="regression gate") as caught:
        quantize_bundle(registry, "fragile:1", data=data, modes=("int8-dynamic",))
    assert caught.value.figure in ("relative_error", "r2_drop", "mae_increase")
    assert caught.value.output == "y" and caught.value.recipe == "dynamic"
    # auto finds the one layer to keep in fp32.
    _, summary = quantize_bundle(registry, "fragile:1", data=data)
    mixed = summary["artifacts"]["model.int8.dynamic-mixed.onnx"]
    assert mixed["gate"] == "passed"
    # ORT's pre-pass fused the layer's MatMul + Add into one Gemm, named after the MatMul.
    assert [name.split("/")[0] for name in mixed["fp32_layers"]] == ["trunk1"]


def test_two_outputs_are_both_gated(tmp_path: Path, rows: np.ndarray) -> None:
    trunk = dense_layers(6, [8, 32])
    heads = {"logits": dense_layers(7, [32, 4])[0], "box": dense_layers(8, [32, 4])[0]}
    model = write_dense(tmp_path / "two.onnx", inputs={"x": 8}, trunk=trunk, heads=heads)
    registry = Registry(tmp_path / "registry")
    publish_model(registry, model, tmp_path / "src", name="det", task="detection")
    data = QuantizeData.from_arrays({"x": rows})
    _, summary = quantize_bundle(registry, "det:1", data=data, modes=("int8-dynamic",))
    good = summary["artifacts"]["model.int8.dynamic.onnx"]
    assert good["gate"] == "passed" and set(good["outputs"]) == {"logits", "box"}
    assert {c["output"] for c in good["checks"]} == {"logits", "box"}
    # Break only the second head: the gate names it, not the first.
    broken = perturbed(model, tmp_path / "broken.onnx", relative=0.5, only="head_box")
    result = _gate_file("detection", model, broken, data)
    assert not result.passed and result.worst.output == "box"
    assert all(c.passed for c in result.checks if c.output == "logits")


def test_encoder_with_an_activation_outlier_keeps_one_layer_fp32(tmp_path: Path) -> None:
    """The issue's case on a transformer graph: the best uniform recipe (dynamic, MatMul,
    per-channel) falls short of cosine 0.99; the search keeps the one MatMul that reads the
    outlier in fp32, and says so."""
    model = write_bert_encoder(tmp_path / "outlier.onnx", outlier=1000.0)
    registry = Registry(tmp_path / "registry")
    publish_model(registry, model, tmp_path / "src", name="enc", task="embedding")
    data = QuantizeData.from_arrays(token_batch(40))
    ref, summary = quantize_bundle(registry, "enc:1", data=data)  # 12 layers, 24 trials at most
    uniform = summary["refused"]["model.int8.dynamic.onnx"]
    assert uniform["gate"] == "failed" and uniform["cosine_min"] < 0.99
    mixed = summary["artifacts"]["model.int8.dynamic-mixed.onnx"]
    assert mixed["gate"] == "passed" and mixed["cosine_min"] >= 0.99
    assert mixed["fp32_layers"] == ["/bert/encoder/layer.1/output/dense/MatMul"]
    assert mixed["search"]["trials"] <= 24 and mixed["search"]["candidates"] == 12
    cost = mixed["cost_vs_uniform"]
    assert 1.0 < cost["size_ratio"] < 1.2 and cost["latency_ratio"] > 0
    assert registry.manifest(ref).metrics["model.int8.dynamic-mixed.onnx"]["fp32_layers"]
    # The table shows the task's figures, what was refused and which layers stayed fp32.
    from rich.console import Console
    from strato_training.cli_optimize import print_summary

    console = Console(record=True, width=200)
    print_summary(summary, console)
    shown = console.export_text()
    assert "cosine min" in shown and "accuracy" not in shown and "1.0000" in shown
    assert "refused model.int8.dynamic.onnx: cosine_m" in shown  # min or mean, the worst
    assert "keeps 1 layer(s) in fp32: /bert/encoder/layer.1/output/dense/MatMul" in shown

    # --force publishes the failing uniform artifacts too, flagged, and never as the default.
    # Under a tighter cap (8 trials: 4 to rank), neighbouring layers are ranked in threes.
    forced, summary = quantize_bundle(registry, "enc:1", data=data, max_trials=8, force=True)
    assert summary["artifacts"]["model.int8.dynamic.onnx"]["gate"] == "failed"
    paired = summary["artifacts"]["model.int8.dynamic-mixed.onnx"]["fp32_layers"]
    assert "/bert/encoder/layer.1/output/dense/MatMul" in paired and len(paired) == 3
    default = registry.manifest(forced).serving["default"]
    assert summary["artifacts"][default]["gate"] in ("passed", "reference")
