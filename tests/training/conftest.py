"""Session-scoped training fixtures: digits loaded once, one MLP trained once, one run exported.

Copy these into another folder's conftest.py to get a real trained model in about a second.
Tests must not modify the shared run folder: copy it (`copy_run`) before changing anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from strato_training.data import Dataset, load_dataset
from strato_training.trainer import TrainConfig, TrainResult, train

FAST = TrainConfig(epochs=8, threads=1, patience=0)


@pytest.fixture(scope="session")
def fast_config() -> TrainConfig:
    """What `trained_mlp` was trained with: 8 epochs, one thread, no early stopping."""
    return FAST


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn digits as 1x28x28, split with seed 0."""
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The reference MLP trained 8 epochs on digits; its run folder has model.safetensors."""
    run_dir = tmp_path_factory.mktemp("run-mlp")
    return train(FAST, out_dir=run_dir, dataset=digits, progress=False)


@pytest.fixture(scope="session")
def exported_run(trained_mlp: TrainResult, digits: Dataset) -> Path:
    """The trained MLP's run folder, evaluated and exported (report.json, model.onnx, export.json)."""
    from strato_training.pipeline import evaluate_run, export_run

    assert trained_mlp.run_dir is not None
    evaluate_run(trained_mlp.run_dir, result=trained_mlp, dataset=digits)
    export_run(trained_mlp.run_dir, result=trained_mlp, dataset=digits)
    return trained_mlp.run_dir


def copy_run(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target)
    return target
