"""The trainer: determinism, early stopping, checkpoints (safetensors, weights-only state_dict)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from strato import ConfigError
from strato_training.data import Dataset
from strato_training.evaluate import predict_torch
from strato_training.trainer import (
    CHECKPOINT,
    RUN_INFO,
    TrainConfig,
    TrainResult,
    load_run,
    load_state_dict,
    train,
)


def test_reference_mlp_learns_digits(
    trained_mlp: TrainResult, digits: Dataset, fast_config: TrainConfig
) -> None:
    logits = predict_torch(trained_mlp.model, digits.test.x)
    assert (logits.argmax(1) == digits.test.y).mean() >= 0.93
    assert len(trained_mlp.history) == fast_config.epochs
    first, last = trained_mlp.history[0], trained_mlp.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert set(first) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    best = min(trained_mlp.history, key=lambda row: row["val_loss"])
    assert trained_mlp.best_epoch == best["epoch"]


def test_same_seed_same_weights_on_cpu(digits: Dataset, fast_config: TrainConfig) -> None:
    config = replace(fast_config, epochs=2)
    first = train(config, dataset=digits, progress=False)
    second = train(config, dataset=digits, progress=False)
    other = train(replace(config, seed=1), dataset=digits, progress=False)
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(tensor, second.model.state_dict()[name], rtol=0, atol=0)
    assert not torch.equal(first.model.head.weight, other.model.head.weight)


def test_early_stopping_keeps_the_best_epoch(digits: Dataset) -> None:
    # a learning rate this high makes validation loss rise quickly
    config = TrainConfig(epochs=30, lr=0.05, patience=2, threads=1)
    result = train(config, dataset=digits, progress=False)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2
    logits = predict_torch(result.model, digits.val.x)
    val_loss = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(digits.val.y)
    )
    assert float(val_loss) == pytest.approx(result.best["val_loss"], rel=1e-4)


def test_run_folder_round_trips(trained_mlp: TrainResult, digits: Dataset) -> None:
    assert trained_mlp.run_dir is not None
    assert (trained_mlp.run_dir / CHECKPOINT).read_bytes()[:8] != b"PK\x03\x04"  # not a pickle zip
    info = json.loads((trained_mlp.run_dir / RUN_INFO).read_text())
    assert info["config"]["model"] == "mlp" and info["labels"] == list(digits.labels)
    loaded = load_run(trained_mlp.run_dir)
    np.testing.assert_array_equal(
        predict_torch(loaded.model, digits.test.x), predict_torch(trained_mlp.model, digits.test.x)
    )
    assert loaded.history == trained_mlp.history


def test_torch_state_dict_loads_weights_only(trained_mlp: TrainResult, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(trained_mlp.model.state_dict(), path)
    state = load_state_dict(path)
    assert set(state) == set(trained_mlp.model.state_dict())


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"callback": print}, path)  # an arbitrary object, only loadable by unpickling it
    with pytest.raises(ConfigError, match="not a weights-only torch state_dict"):
        load_state_dict(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_state_dict(tmp_path / "missing.safetensors")


def test_load_run_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a training run"):
        load_run(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("device", "tpu", "device must be auto|cpu|cuda"),
        ("nproc", 0, "nproc must be >= 1"),
        ("batch_size", 1, "batch_size 1 < nproc 2"),
    ],
)
def test_config_is_validated(field: str, value: object, expected: str) -> None:
    fields = {"nproc": 2} if field == "batch_size" else {}
    with pytest.raises(ConfigError, match=expected):
        TrainConfig(**(fields | {field: value}))  # type: ignore[arg-type]


def test_unknown_model_fails_before_training(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        train(TrainConfig(model="transformer"), dataset=digits, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for AMP")
@pytest.mark.gpu
def test_amp_on_cuda(digits: Dataset) -> None:
    result = train(TrainConfig(epochs=3, device="cuda"), dataset=digits, progress=False)
    assert result.device.startswith("cuda")
    assert result.history[-1]["val_accuracy"] > 0.8
