"""strato_training: datasets, models, trainer (CPU/GPU, AMP, DDP), evaluation, ONNX export with a
parity gate, calibration, quantization, TensorRT compile, publish.

Each pipeline step is a plain function with typed inputs and outputs::

    from strato_training import TrainConfig, train, export_onnx, check_parity, load_dataset
    from strato_training import ImportConfig, import_onnx, import_module   # any model in
    from strato_training.evaluate import evaluate      # (the modules `evaluate` and `publish`
    from strato_training.publish import publish        #  share their step's name)

The names load lazily, so `import strato_training` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Dataset",
    "EvalReport",
    "ExportConfig",
    "ImportConfig",
    "ParityResult",
    "Preprocessing",
    "PublishConfig",
    "QuickstartConfig",
    "TrainConfig",
    "TrainResult",
    "check_parity",
    "evaluate_logits",
    "export_onnx",
    "import_module",
    "import_onnx",
    "load_dataset",
    "load_run",
    "run_quickstart",
    "train",
]

_HOMES = {
    "Dataset": "data",
    "load_dataset": "data",
    "EvalReport": "evaluate",
    "evaluate_logits": "evaluate",
    "ExportConfig": "export",
    "export_onnx": "export",
    "check_parity": "export",
    "PublishConfig": "publish",
    "ImportConfig": "import_config",
    "import_module": "importer",
    "import_onnx": "importer",
    "ParityResult": "parity",
    "Preprocessing": "graph",
    "QuickstartConfig": "pipeline",
    "run_quickstart": "pipeline",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
    "load_run": "trainer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'strato_training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"strato_training.{home}"), name)
