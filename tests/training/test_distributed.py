"""Data-parallel training over 2 CPU processes (gloo) matches single-process accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
from strato import ConfigError
from strato_training.data import Dataset
from strato_training.distributed import TORCHRUN_EXAMPLE
from strato_training.evaluate import predict_torch
from strato_training.trainer import TrainConfig, TrainResult, load_run, train


def accuracy(result: TrainResult, digits: Dataset) -> float:
    return float((predict_torch(result.model, digits.test.x).argmax(1) == digits.test.y).mean())


@pytest.mark.timeout(300)
def test_two_processes_match_one_within_a_point(
    trained_mlp: TrainResult, digits: Dataset, fast_config: TrainConfig, tmp_path: Path
) -> None:
    from dataclasses import replace

    config = replace(fast_config, nproc=2)
    result = train(config, out_dir=tmp_path / "ddp", dataset=digits, progress=False)
    assert result.world_size == 2
    assert len(result.history) == len(trained_mlp.history)
    assert abs(accuracy(result, digits) - accuracy(trained_mlp, digits)) <= 0.01
    # rank 0 wrote an ordinary run folder
    assert load_run(tmp_path / "ddp").world_size == 2


def test_a_bad_spec_fails_before_spawning(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        train(TrainConfig(model="nope", nproc=2), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        train(TrainConfig(dataset="npz:/missing.npz", nproc=2), progress=False)


def test_the_documented_torchrun_line() -> None:
    assert TORCHRUN_EXAMPLE.startswith("torchrun --standalone --nproc-per-node 2")
    assert " train " in TORCHRUN_EXAMPLE
