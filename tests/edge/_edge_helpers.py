"""Helpers the edge tests import by name (conftest modules all share the name `conftest`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _root_conftest() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("strato_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_root = _root_conftest()
build_tiny_bundle = _root.build_tiny_bundle
write_tiny_onnx = _root.write_tiny_onnx
free_port = _root.free_port
