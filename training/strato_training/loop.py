"""The training loop: Adam + cross-entropy, early stopping on validation, AMP on CUDA.

`fit` runs in one process or as one rank of a data-parallel run (`reduce` sums over ranks);
`check_model` tries the model on two samples first so a model that does not fit the data
fails with a `ConfigError` saying what it expected and what it got.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from strato import ConfigError
from torch import nn

from strato_training.runs import TrainConfig, TrainResult

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from strato_training.data import Dataset

__all__ = ["MIN_VALIDATION_ROWS", "Reduce", "check_model", "fit", "warn_if_tiny"]

Reduce = Callable[[torch.Tensor], torch.Tensor]
MIN_VALIDATION_ROWS = 20


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    reduce: Reduce | None = None,
    progress: bool = True,
) -> TrainResult:
    """The training loop. `model` may be DDP-wrapped; `reduce` sums a tensor over ranks."""
    module: nn.Module = getattr(model, "module", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)  # type: ignore[attr-defined]
    x_train = torch.from_numpy(dataset.train.x).to(device)
    y_train = torch.from_numpy(dataset.train.y).to(device)
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(module.state_dict())
    stopped_early, started = False, time.perf_counter()
    with _EpochBars(progress and rank == 0, config.epochs) as bars:
        for epoch in range(1, config.epochs + 1):
            batches = list(_batches(len(y_train), config, epoch, rank, world_size))
            bars.start(epoch, len(batches))
            model.train()
            totals = torch.zeros(3, dtype=torch.float64)
            for index in batches:
                totals += _step(model, optimizer, scaler, x_train[index], y_train[index], use_amp)
                bars.advance(totals)
            if reduce is not None:
                totals = reduce(totals)
            row = _epoch_row(epoch, totals, *_validate(module, dataset, device))
            history.append(row)
            bars.finish(row)
            if row["val_loss"] < best_loss - 1e-6:
                best_loss, best_epoch = row["val_loss"], epoch
                best_state = copy.deepcopy(module.state_dict())
            elif config.patience and epoch - best_epoch >= config.patience:
                stopped_early = True
                break
    module.load_state_dict(best_state)
    return TrainResult(
        model=module.cpu().eval(),
        config=config,
        labels=dataset.labels,
        input_shape=dataset.input_shape,
        history=history,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        device=str(device),
        world_size=world_size,
    )


def _epoch_row(
    epoch: int, totals: torch.Tensor, val_loss: float, val_accuracy: float
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": float(totals[0] / totals[2]),
        "train_accuracy": float(totals[1] / totals[2]),
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
    }


def _batches(
    samples: int, config: TrainConfig, epoch: int, rank: int, world_size: int
) -> Iterator[torch.Tensor]:
    # One shuffle per epoch shared by every rank; each global batch is dealt out across ranks,
    # so N processes see the same global batches as one process does.
    order = np.random.default_rng([config.seed, epoch]).permutation(samples)
    for start in range(0, samples, config.batch_size):
        global_batch = order[start : start + config.batch_size]
        if len(global_batch) < world_size:
            continue  # a rank with no samples would stall the gradient all-reduce
        yield torch.from_numpy(global_batch[rank::world_size])


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    use_amp: bool,
) -> torch.Tensor:
    """One optimizer step; returns (summed loss, correct, samples)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    correct = (logits.argmax(dim=1) == y).sum()
    return torch.tensor(
        [float(loss.detach()) * len(y), float(correct), float(len(y))], dtype=torch.float64
    )


def _validate(model: nn.Module, dataset: Dataset, device: torch.device) -> tuple[float, float]:
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(dataset.val.x).to(device)
        y = torch.from_numpy(dataset.val.y).to(device)
        logits = model(x).float()
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy


class _EpochBars:
    """One rich progress bar per epoch (on stderr) showing running loss and accuracy."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _EpochBars:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(stderr=True),
            )
            self._progress.start()
        return self

    def start(self, epoch: int, batches: int) -> None:
        if self._progress is not None:
            width = len(str(self.epochs))
            self._task = self._progress.add_task(
                f"epoch {epoch:>{width}}/{self.epochs}", total=batches, metrics=""
            )

    def advance(self, totals: torch.Tensor) -> None:
        """`totals`: running (summed loss, correct, samples) of this epoch."""
        if self._progress is not None and self._task is not None:
            loss, accuracy = float(totals[0] / totals[2]), float(totals[1] / totals[2])
            self._progress.update(
                self._task, advance=1, metrics=f"loss {loss:.4f} acc {accuracy:.3f}"
            )

    def finish(self, row: dict[str, float]) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                metrics=(
                    f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} · "
                    f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
                ),
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def check_model(
    model: nn.Module, dataset: Dataset, config: TrainConfig, *, device: torch.device
) -> None:
    """One forward on two training samples: a model that does not fit the data is a
    `ConfigError` that says what the model expected and what it got."""
    sample = torch.from_numpy(dataset.train.x[:2]).to(device)
    got = f"one float32 input shaped {[len(sample), *dataset.input_shape]}"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(sample)
    except TypeError as exc:  # forward(self, a, b) called with one tensor
        raise ConfigError(
            f"model {config.model!r} cannot be called with {got}: {exc}. `strato train` feeds "
            "one input; import a model with several inputs with `strato import`"
        ) from None
    except RuntimeError as exc:  # shape errors: wrong channels, wrong feature count
        raise ConfigError(
            f"model {config.model!r} does not fit the dataset {dataset.name!r} ({got}, "
            f"{dataset.num_classes} classes): {_first_line(exc)}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != len(sample):
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(
            f"model {config.model!r} returned {shape} for {got}; `strato train` needs logits "
            f"shaped [batch, classes] = [{len(sample)}, {dataset.num_classes}]"
        )
    if logits.shape[1] < dataset.num_classes:
        raise ConfigError(
            f"targets go up to class {dataset.num_classes - 1} but model {config.model!r} "
            f"outputs {logits.shape[1]} classes: targets out of range (expected an output of "
            f"{dataset.num_classes} classes)"
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def warn_if_tiny(dataset: Dataset, config: TrainConfig) -> None:
    """Warn when an epoch is one optimizer step or validation has too few rows to trust."""
    if len(dataset.train) <= config.batch_size:
        warnings.warn(
            f"{len(dataset.train)} training rows at batch size {config.batch_size}: every "
            "epoch is a single optimizer step",
            UserWarning,
            stacklevel=2,
        )
    if len(dataset.val) < MIN_VALIDATION_ROWS:
        warnings.warn(
            f"the validation split has {len(dataset.val)} rows (< {MIN_VALIDATION_ROWS}): "
            "early stopping and the best epoch rest on very few samples",
            UserWarning,
            stacklevel=2,
        )
