"""What a transport sends and gets back: one inference request and its response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["InferRequest", "InferResponse"]


@dataclass(slots=True)
class InferRequest:
    """`model` is a name; `version` pins one (``None``: whatever the backend serves)."""

    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    version: str | None = None
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    outputs: dict[str, np.ndarray[Any, Any]]
    model_name: str
    model_version: str
    id: str | None = None
    served_by: str = ""
    precision: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
