"""What `strato import` takes: the config (name, task, labels, preprocessing, gate), the
example arrays, labels and preprocessing files, and what each task needs of the outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, ModelNotFound, ModelRef

from strato_training.graph import Preprocessing

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from strato import TensorSpec

    from strato_training.module_export import DynamicAxes

__all__ = [
    "TASKS",
    "ImportConfig",
    "check_task",
    "load_examples",
    "read_labels",
    "read_preprocessing",
]

TASKS = ("classification", "embedding", "regression", "detection", "generic")


@dataclass(frozen=True)
class ImportConfig:
    """What to call the bundle and how to gate it. `preprocessing` (see `graph.Preprocessing`)
    is baked into the graph ahead of the model when given."""

    name: str
    task: str = "generic"
    labels: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None
    version: str | None = None
    alias: str | None = None
    atol: float = 1e-4
    opset: int = 18
    exporter: str = "auto"
    output_names: tuple[str, ...] = ()
    dynamic: DynamicAxes = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        try:
            ModelRef.parse(self.name if self.version is None else f"{self.name}:{self.version}")
            if self.alias:
                ModelRef.parse(f"{self.name}@{self.alias}")
        except ModelNotFound as exc:
            raise ConfigError(str(exc)) from None
        if self.atol < 0:
            raise ConfigError(f"atol must be >= 0, got {self.atol}")
        if self.exporter not in ("auto", "dynamo", "legacy"):
            raise ConfigError(f"exporter must be auto|dynamo|legacy, got {self.exporter!r}")
        if self.labels and self.task != "classification":
            raise ConfigError(f"labels are for classification models; task is {self.task!r}")


def load_examples(path: str | os.PathLike[str]) -> dict[str, np.ndarray[Any, Any]]:
    """One named array per input, from a `.npz` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"example file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            examples = {name: np.asarray(archive[name]) for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable .npz archive: {exc}") from exc
    if not examples:
        raise ConfigError(f"{path} holds no arrays; expected one named array per input")
    return examples


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class labels from a JSON list or a text file with one label per line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not JSON: {exc}") from None
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected a JSON list of labels")
        return tuple(str(label) for label in raw)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_preprocessing(path: str | os.PathLike[str]) -> Preprocessing:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"preprocessing file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return Preprocessing.from_dict(raw)


def check_task(config: ImportConfig, outputs: Sequence[TensorSpec]) -> None:
    """What a task needs of the outputs (later steps rely on it)."""
    first = outputs[0]
    floating = first.datatype in ("FP16", "FP32", "FP64")
    if config.task in ("classification", "embedding") and (not floating or len(first.shape) != 2):
        raise ConfigError(
            f"task {config.task!r} needs a first output shaped [batch, "
            f"{'classes' if config.task == 'classification' else 'dim'}] of floats; "
            f"{first.name!r} is {first.datatype} {list(first.shape)}"
        )
    if (
        config.task == "classification"
        and config.labels
        and first.shape[-1]
        not in (
            -1,
            len(config.labels),
        )
    ):
        raise ConfigError(
            f"{len(config.labels)} labels but output {first.name!r} has {first.shape[-1]} classes"
        )
    if config.task == "regression" and not all(
        o.datatype in ("FP16", "FP32", "FP64") for o in outputs
    ):
        raise ConfigError("task 'regression' needs float outputs")
