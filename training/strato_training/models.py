"""Model specs: the reference MLP, a small CNN, or any `nn.Module` given as `module:attr`.

mlp               flatten-128-ReLU-classes (784-128-10 on 28x28 digits, the Keras MNIST example;
                  any input shape, tabular rows included)
cnn               two 3x3 conv blocks (8 and 16 channels) and a linear head
pkg.module:attr   an nn.Module instance, or a class / factory called with no arguments
                  (or with `num_classes=` when it accepts that keyword)
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from typing import TYPE_CHECKING, Any

import torch
from strato import ConfigError
from torch import nn

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "BUILTIN_MODELS",
    "MLP",
    "SmallCNN",
    "build_model",
    "count_parameters",
    "import_user_module",
]


class MLP(nn.Module):
    """Flatten → Linear(784, 128) → ReLU → Linear(128, classes)."""

    def __init__(
        self, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, hidden: int = 128
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(math.prod(input_shape), hidden)
        self.relu = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.hidden(self.flatten(x))))  # type: ignore[no-any-return]


class SmallCNN(nn.Module):
    """conv3x3(8) → ReLU → maxpool → conv3x3(16) → ReLU → maxpool → Linear(classes)."""

    def __init__(self, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.head = nn.Linear(16 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.features(x)))  # type: ignore[no-any-return]


BUILTIN_MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN}


def build_model(spec: str, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model a spec names, with fresh weights (seed torch first for reproducible ones)."""
    if spec == "mlp":
        return MLP(input_shape, num_classes)
    if spec in BUILTIN_MODELS:
        if len(input_shape) != 3:
            raise ConfigError(
                f"model {spec!r} expects (channels, height, width) inputs, got {input_shape}"
            )
        return BUILTIN_MODELS[spec](input_shape, num_classes)
    if ":" not in spec:
        known = ", ".join(BUILTIN_MODELS)
        raise ConfigError(f"unknown model {spec!r}; expected one of {known} or 'module:attr'")
    return _user_model(spec, num_classes)


def import_user_module(spec: str, module_name: str) -> ModuleType:
    """Import the module of a `module:attr` spec, from the working directory first.

    A console script's `sys.path` starts with its own folder, not the caller's, so without
    this `strato import mymodels:Net` would not find the `mymodels.py` beside the user (the
    way `python -m` and uvicorn's `--app-dir .` find it).
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {spec!r}: cannot import module {module_name!r}: {exc}") from exc


def _user_model(spec: str, num_classes: int) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    module = import_user_module(spec, module_name)
    try:
        target: Any = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"model {spec!r}: module {module_name!r} has no {attr!r}") from None
    if isinstance(target, nn.Module):
        return target
    if not callable(target):
        raise ConfigError(f"model {spec!r} is neither an nn.Module nor a callable that builds one")
    try:
        accepts_classes = "num_classes" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        accepts_classes = False
    model = target(num_classes=num_classes) if accepts_classes else target()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
