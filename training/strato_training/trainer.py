"""The trainer step: `train(config)` trains in this process, or data-parallel over
`config.nproc` local processes (see `strato_training.distributed`), or as one rank of a
`torchrun` launch when `WORLD_SIZE` > 1 is set. Every path writes the same run folder
(`strato_training.runs`): model.safetensors + run.json.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from strato_training.distributed import train_distributed
from strato_training.loop import check_model, fit, warn_if_tiny
from strato_training.models import build_model
from strato_training.runs import (
    CHECKPOINT,
    RUN_INFO,
    TrainConfig,
    TrainResult,
    dataset_for,
    load_run,
    load_state_dict,
    resolve_device,
    save_run,
)

if TYPE_CHECKING:
    from strato_training.data import Dataset

__all__ = [
    "CHECKPOINT",
    "RUN_INFO",
    "TrainConfig",
    "TrainResult",
    "dataset_for",
    "fit",
    "load_run",
    "load_state_dict",
    "resolve_device",
    "save_run",
    "train",
]


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `config.model` on `config.dataset`; save the run folder when `out_dir` is given."""
    if config.nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return train_distributed(config, out_dir=out_dir, progress=progress, dataset=dataset)
    dataset = dataset or dataset_for(config)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
    ).to(device)
    check_model(model, dataset, config, device=device)
    warn_if_tiny(dataset, config)
    result = fit(model, dataset, config, device=device, progress=progress)
    if out_dir is not None:
        save_run(result, out_dir)
    return result
