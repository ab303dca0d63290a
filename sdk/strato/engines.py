"""Inference engines, for code that serves bundles (the edge daemon, the Lambda handler, tools).

`load_engine(bundle)` picks the best engine this device can run: a TensorRT plan whose key
matches the device, else ONNX Runtime with the best provider it really gets. Plans are keyed by
`engine_key(...)` (sha256 of the source ONNX, TensorRT version, compute capability, precision)
and live at `plan_path(...)` under `PLAN_DIR` in the bundle.
"""

from __future__ import annotations

from ._engines import Engine, load_engine
from ._engines.tensorrt_runtime import PLAN_DIR, engine_key, plan_path

__all__ = ["PLAN_DIR", "Engine", "engine_key", "load_engine", "plan_path"]
