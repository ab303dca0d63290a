"""Inference engines: ONNX Runtime everywhere, TensorRT where the device has it."""

from __future__ import annotations

from .base import Engine
from .loader import load_engine

__all__ = ["Engine", "load_engine"]
