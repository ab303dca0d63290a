"""Datasets and models users bring to `strato train`: tabular rows kept exactly as given, RGB
folders at a chosen size, user modules trained on them, and the mistakes users make reported
as ConfigErrors that say what the model expected and what it got."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from strato import ConfigError, DatasetError
from strato_training.data import load_dataset
from strato_training.trainer import TrainConfig, train
from torch import nn

STRATO = str(Path(sys.executable).with_name("strato"))


def tabular(path: Path, rows: int = 200, features: int = 5, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, features)).astype(np.float32) * 4
    y = np.arange(rows) % classes
    np.savez(path, x=x, y=y)
    return path


def test_tabular_rows_are_kept_exactly_negatives_included(tmp_path: Path) -> None:
    path = tabular(tmp_path / "t.npz")
    dataset = load_dataset(f"npz:{path}")
    assert dataset.input_shape == (5,)
    with np.load(path) as archive:
        x = archive["x"]
    got = np.concatenate([dataset.train.x, dataset.val.x, dataset.test.x])
    assert (got < 0).mean() == pytest.approx((x < 0).mean())  # ~half, none clipped to 0
    assert sorted(got[:, 0].tolist()) == sorted(x[:, 0].tolist())


def test_tabular_nan_is_refused(tmp_path: Path) -> None:
    x = np.ones((30, 2), np.float32)
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(30) % 2)
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(f"npz:{tmp_path / 'nan.npz'}")


def test_folder_keeps_rgb_at_the_chosen_size(tmp_path: Path) -> None:
    from PIL import Image

    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.new("RGB", (40, 30), colour).save(tmp_path / label / f"{i}.png")
    dataset = load_dataset(f"folder:{tmp_path}", image_size=32, channels=3)
    assert dataset.input_shape == (3, 32, 32)
    x = np.concatenate([dataset.train.x, dataset.val.x, dataset.test.x])
    y = np.concatenate([dataset.train.y, dataset.val.y, dataset.test.y])
    blue, red = dataset.labels.index("blue"), dataset.labels.index("red")
    assert x[y == red][:, 0].mean() == pytest.approx(1.0) and x[y == red][:, 2].max() == 0
    assert x[y == blue][:, 2].mean() == pytest.approx(1.0)
    gray = load_dataset(f"folder:{tmp_path}")
    assert gray.input_shape == (1, 28, 28)


def test_npz_rgb_images_take_the_chosen_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "i.npz", x=rng.integers(0, 256, (40, 3, 20, 20)), y=np.arange(40) % 2)
    dataset = load_dataset(f"npz:{tmp_path / 'i.npz'}", image_size=16, channels=3)
    assert dataset.input_shape == (3, 16, 16)
    assert dataset.train.x.min() >= 0 and dataset.train.x.max() <= 1


class TabularNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class TwoClassNet(TabularNet):
    def __init__(self) -> None:
        super().__init__(num_classes=2)


class RGBNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))  # type: ignore[no-any-return]


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(x * mask)  # type: ignore[no-any-return]


def config(path: Path, model: str, **extra: object) -> TrainConfig:
    return TrainConfig(dataset=f"npz:{path}", model=model, epochs=2, threads=1, patience=0, **extra)


def test_a_user_module_trains_on_tabular_rows(tmp_path: Path) -> None:
    result = train(
        config(tabular(tmp_path / "t.npz"), f"{__name__}:TabularNet"),
        out_dir=tmp_path / "run",
        progress=False,
    )
    assert result.input_shape == (5,)
    assert len(result.history) == 2 and (tmp_path / "run" / "model.safetensors").is_file()


def test_a_wrong_channel_count_says_what_the_model_expected(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "g.npz", x=rng.integers(0, 256, (60, 12, 12)), y=np.arange(60) % 3)
    with pytest.raises(ConfigError, match=r"\[2, 1, 28, 28\].*channels") as info:
        train(config(tmp_path / "g.npz", f"{__name__}:RGBNet"), progress=False)
    assert "does not fit the dataset" in str(info.value)


def test_targets_out_of_range_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"targets go up to class 2 but .* outputs 2 classes"):
        train(config(tabular(tmp_path / "t.npz"), f"{__name__}:TwoClassNet"), progress=False)


def test_a_forward_needing_more_inputs_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be called with one float32 input shaped"):
        train(config(tabular(tmp_path / "t.npz"), f"{__name__}:TwoInputs"), progress=False)


def test_tiny_data_warns_about_one_step_epochs_and_a_small_validation_split(tmp_path: Path):
    path = tabular(tmp_path / "tiny.npz", rows=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(path, f"{__name__}:TabularNet", batch_size=64), progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("single optimizer step" in m for m in messages)
    assert any("validation split has" in m and "< 20" in m for m in messages)


def test_strato_train_reports_a_model_mistake_without_a_traceback(tmp_path: Path) -> None:
    path = tabular(tmp_path / "t.npz")
    module = tmp_path / "usernets.py"
    module.write_text(
        "from torch import nn\ndef make():\n    return nn.Sequential(nn.Linear(7, 3))\n"
    )
    done = subprocess.run(
        [
            STRATO,
            "train",
            "--dataset",
            f"npz:{path}",
            "--model",
            "usernets:make",
            "-q",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "does not fit the dataset" in done.stderr and "[2, 5]" in done.stderr
    assert "Traceback" not in done.stderr
