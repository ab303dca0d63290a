"""ONNX export (dynamic batch, both exporters) and the parity gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from strato import ConfigError, ExportError, ParityError
from strato_training.data import Dataset
from strato_training.evaluate import predict_onnx, predict_torch
from strato_training.export import ExportConfig, check_parity, export_onnx
from strato_training.trainer import TrainResult


def test_exported_run_records_exporter_opset_and_parity(exported_run: Path) -> None:
    info = json.loads((exported_run / "export.json").read_text())
    assert info["onnx"]["exporter"] == "dynamo"  # torch 2.13's default exporter, via onnxscript
    assert info["framework"]["exporter"] == "dynamo"
    assert info["framework"]["torch"].startswith("2.")
    assert info["onnx"]["opset"] == 18
    assert info["parity"]["max_abs_diff"] <= 1e-4
    assert info["parity"]["top1_agreement"] == 1.0
    assert info["onnx_eval"]["accuracy"] > 0.9


def test_onnx_has_a_dynamic_batch_axis(exported_run: Path, digits: Dataset) -> None:
    model = onnx.load(str(exported_run / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert not (exported_run / "model.onnx.data").exists()  # one self-contained file
    for batch in (1, 7, 300):
        assert predict_onnx(exported_run / "model.onnx", digits.test.x[:batch]).shape == (batch, 10)


@pytest.mark.parametrize("model_spec", ["legacy-mlp", "cnn"])
def test_legacy_exporter_and_cnn(
    model_spec: str, trained_mlp: TrainResult, digits: Dataset, tmp_path: Path
) -> None:
    if model_spec == "cnn":
        from strato_training.models import SmallCNN

        model, config = SmallCNN().eval(), ExportConfig()
    else:
        model, config = trained_mlp.model, ExportConfig(exporter="legacy")
    result = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28), config=config)
    assert result.exporter == ("legacy" if model_spec == "legacy-mlp" else "dynamo")
    assert result.fallback_reason is None
    parity = check_parity(model, result.path, digits.test.x[:64])
    assert parity.samples == 64 and parity.max_abs_diff <= 1e-4


def test_parity_error_names_the_output_and_the_worst_difference(
    trained_mlp: TrainResult, exported_run: Path, digits: Dataset, tmp_path: Path
) -> None:
    model = onnx.load(str(exported_run / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("head.bias"))
    values = numpy_helper.to_array(bias).copy()
    values[3] += 0.5  # perturb one logit of every sample
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    with pytest.raises(ParityError, match=r"output 'logits'.*0\.5") as caught:
        check_parity(trained_mlp.model, tmp_path / "perturbed.onnx", digits.test.x)
    assert caught.value.output == "logits"
    assert caught.value.max_abs_diff == pytest.approx(0.5, abs=1e-4)


def test_zero_tolerance_fails_on_float_noise(
    trained_mlp: TrainResult, exported_run: Path, digits: Dataset
) -> None:
    torch_logits = predict_torch(trained_mlp.model, digits.test.x)
    onnx_logits = predict_onnx(exported_run / "model.onnx", digits.test.x)
    if np.array_equal(torch_logits, onnx_logits):
        pytest.skip("torch and ONNX Runtime agree bit for bit on this machine")
    with pytest.raises(ParityError, match="atol 0"):
        check_parity(trained_mlp.model, exported_run / "model.onnx", digits.test.x, atol=0.0)


def test_bad_export_settings(trained_mlp: TrainResult, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exporter must be one of"):
        ExportConfig(exporter="tflite")
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=7)
    with pytest.raises(ConfigError, match="at least one sample"):
        check_parity(trained_mlp.model, tmp_path / "x.onnx", np.zeros((0, 1, 28, 28), np.float32))


def test_a_model_that_fixes_the_batch_size_is_refused(tmp_path: Path) -> None:
    import torch

    class FixedBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, -1)[:, :10]  # only works for a batch of 2

    with pytest.raises(ExportError):
        export_onnx(
            FixedBatch(),
            tmp_path / "bad.onnx",
            input_shape=(1, 28, 28),
            config=ExportConfig(exporter="dynamo"),
        )
