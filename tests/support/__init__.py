"""Helpers the tests import by name (`from support import build_tiny_bundle`): tests/ is on
pytest's `pythonpath`, so no test loads a conftest.py by path or edits sys.path."""

from __future__ import annotations

from .bundles import (
    DIGIT_LABELS,
    build_oom_bundle,
    build_poison_bundle,
    build_tiny_bundle,
    free_port,
    write_oom_onnx,
    write_tiny_onnx,
)

__all__ = [
    "DIGIT_LABELS",
    "build_oom_bundle",
    "build_poison_bundle",
    "build_tiny_bundle",
    "free_port",
    "write_oom_onnx",
    "write_tiny_onnx",
]
