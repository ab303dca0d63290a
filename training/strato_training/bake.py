"""Bake preprocessing into a trained run's `model.onnx`, so every tier takes raw pixels.

`strato export RUN --preprocessing prep.json` (or `export_step(..., preprocessing=recipe)`):
the exported graph gains the recipe's ops ahead of the model (uint8 NHWC in, cast, scale,
mean/std, layout), the parity gate runs through them — the test split sent as the raw pixels
it came from against torch fed the same arithmetic in numpy — and `export.json` records the
wire signature so that `publish` writes both signatures into the manifest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from strato_training.evaluate import evaluate_logits
from strato_training.export import ParityReport, write_export_info
from strato_training.graph import bake_preprocessing, load_model, read_signature, save_model, to_raw
from strato_training.parity import gate_outputs, onnx_runner

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import numpy as np

    from strato_training.data import Dataset
    from strato_training.export import ExportResult
    from strato_training.graph import Preprocessing
    from strato_training.runs import TrainResult

__all__ = ["bake_run"]


def bake_run(
    run_dir: Path,
    result: TrainResult,
    exported: ExportResult,
    dataset: Dataset,
    recipe: Preprocessing,
    *,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
) -> tuple[ExportResult, ParityReport]:
    """Bake `recipe` into `exported.path`, gate it on the test split as raw pixels, record it."""
    native = read_signature(load_model(exported.path))
    model, wire_input = bake_preprocessing(load_model(exported.path), recipe)
    save_model(model, exported.path.parent, exported.path.name)
    wire = read_signature(model)
    name, output = wire_input.name, exported.output_name
    raw = to_raw(recipe, dataset.test.x)
    torch_model = result.model.eval()

    def reference(inputs: Mapping[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        with torch.inference_mode():
            return [torch_model(torch.from_numpy(recipe.apply(inputs[name]))).numpy()]

    candidate = onnx_runner(str(exported.path), [output])
    gate = gate_outputs(reference, candidate, [{name: raw[:1]}, {name: raw}], [output], atol=atol)
    logits = candidate({name: raw})[0]
    with torch.inference_mode():
        expected = torch_model(torch.from_numpy(recipe.apply(raw))).numpy()
    parity = ParityReport(
        output=output,
        samples=len(raw),
        max_abs_diff=gate.max_abs_diff,
        mean_abs_diff=gate.outputs[0].mean_abs_diff,
        top1_agreement=float((expected.argmax(1) == logits.argmax(1)).mean()),
        atol=atol,
        min_top1_agreement=min_top1_agreement,
    )
    scores = evaluate_logits(logits, dataset.test.y, result.labels)
    exported = replace(exported, size=exported.path.stat().st_size)
    onnx_eval = {
        "accuracy": scores.accuracy,
        "macro_f1": scores.macro_f1,
        "samples": scores.samples,
        "split": "test (raw pixels through the baked preprocessing)",
        "size": exported.size,
    }
    extra = {
        "wire": wire.to_dict(),
        "model_signature": native.to_dict(),
        "preprocessing": recipe.to_dict() | {"input": name, "baked": True},
    }
    write_export_info(run_dir, exported, parity, onnx_eval=onnx_eval, extra=extra)
    return exported, parity
