"""The pipeline steps: plain functions with typed inputs and frozen results.

`load_data` → `train_step` → `evaluate_run` → `export_step` (ONNX + parity) → `publish_step`
→ `optimize_step` → `predict_step`. The quickstart (`strato_training.pipeline`) runs them in
that order; the CLI commands call them one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from strato_training.evaluate import EvalReport, evaluate, evaluate_logits, predict_onnx
from strato_training.export import (
    ONNX_MODEL,
    ExportConfig,
    ExportResult,
    ParityReport,
    check_parity,
    export_onnx,
    write_export_info,
)
from strato_training.publish import PublishConfig, publish
from strato_training.trainer import TrainConfig, TrainResult, dataset_for, load_run, train

if TYPE_CHECKING:
    import os

    from strato import Bundle, ModelRef, Registry

    from strato_training.data import Dataset
    from strato_training.graph import Preprocessing

__all__ = [
    "Exported",
    "Optimized",
    "Published",
    "Served",
    "evaluate_run",
    "export_run",
    "export_step",
    "load_data",
    "optimize_imported",
    "optimize_step",
    "predict_step",
    "publish_step",
    "record_parity",
    "train_step",
]


def load_data(config: TrainConfig) -> Dataset:
    """The dataset `config` trains on, split by its seed and fractions."""
    return dataset_for(config)


def train_step(
    config: TrainConfig, dataset: Dataset, run_dir: Path, *, progress: bool = True
) -> TrainResult:
    """Train and write the run folder (model.safetensors + run.json)."""
    return train(config, out_dir=run_dir, dataset=dataset, progress=progress)


def evaluate_run(
    run_dir: Path, *, result: TrainResult | None = None, dataset: Dataset | None = None
) -> EvalReport:
    """Score a run's model on its test split; writes report.json and the charts into the run."""
    result = result or load_run(run_dir)
    dataset = dataset or dataset_for(result.config)
    return evaluate(
        result.model,
        dataset.test,
        result.labels,
        run_dir,
        history=result.history,
        extra={"split": "test", "model": result.config.model, "dataset": dataset.name},
    )


@dataclass(frozen=True)
class Exported:
    """The exported ONNX file and its parity with torch on the test split."""

    export: ExportResult
    parity: ParityReport


def export_step(
    run_dir: Path,
    result: TrainResult,
    dataset: Dataset,
    *,
    config: ExportConfig | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    preprocessing: Preprocessing | None = None,
) -> Exported:
    """Export the trained model, gate it on parity over the test split, record export.json.

    With `preprocessing`, the recipe is baked into the graph and the gate runs through it
    (`strato_training.bake`): the bundle then takes raw pixels on every tier."""
    exported = export_onnx(
        result.model, run_dir / ONNX_MODEL, input_shape=result.input_shape, config=config
    )
    if preprocessing is not None:
        from strato_training.bake import bake_run

        exported, parity = bake_run(
            run_dir,
            result,
            exported,
            dataset,
            preprocessing,
            atol=atol,
            min_top1_agreement=min_top1_agreement,
        )
        return Exported(exported, parity)
    parity = record_parity(
        run_dir, result, exported, dataset, atol=atol, min_top1_agreement=min_top1_agreement
    )
    return Exported(exported, parity)


def export_run(
    run_dir: str | os.PathLike[str],
    *,
    config: ExportConfig | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    result: TrainResult | None = None,
    dataset: Dataset | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[ExportResult, ParityReport]:
    """`export_step` on a run folder (the model and dataset are loaded when not given)."""
    run_dir = Path(run_dir)
    result = result or load_run(run_dir)
    dataset = dataset or dataset_for(result.config)
    done = export_step(
        run_dir,
        result,
        dataset,
        config=config,
        atol=atol,
        min_top1_agreement=min_top1_agreement,
        preprocessing=preprocessing,
    )
    return done.export, done.parity


def record_parity(
    run_dir: Path,
    result: TrainResult,
    exported: ExportResult,
    dataset: Dataset,
    *,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
) -> ParityReport:
    """Gate an exported model on parity over the test split; score it; write export.json."""
    parity = check_parity(
        result.model,
        exported.path,
        dataset.test.x,
        atol=atol,
        min_top1_agreement=min_top1_agreement,
        output=exported.output_name,
    )
    logits = predict_onnx(exported.path, dataset.test.x)
    scores = evaluate_logits(logits, dataset.test.y, result.labels)
    onnx_eval = {
        "accuracy": scores.accuracy,
        "macro_f1": scores.macro_f1,
        "samples": scores.samples,
        "split": "test",
        "size": exported.size,
    }
    write_export_info(run_dir, exported, parity, onnx_eval=onnx_eval)
    return parity


@dataclass(frozen=True)
class Published:
    ref: ModelRef
    bundle: Bundle


def publish_step(
    run_dir: Path, name: str, registry: Registry, *, alias: str | None = None
) -> Published:
    """Publish the run folder as the next version of `name`; the bundle, loaded back verified."""
    ref = publish(run_dir, PublishConfig(name, alias=alias), registry=registry).ref
    return Published(ref, registry.open(ref))


@dataclass(frozen=True)
class Optimized:
    """The optimized version (quantized + calibrated); `summary` is what `optimize_bundle`
    reports (per-artifact metrics, the default, calibration)."""

    ref: ModelRef
    summary: dict[str, Any]


def optimize_step(
    registry: Registry, ref: ModelRef, dataset: Dataset, *, alias: str | None = "prod"
) -> Optimized:
    """Quantize + gate + calibrate `ref` into its next version (and point `alias` at it)."""
    from strato_training.optimize import optimize_bundle

    # optimize's Dataset protocol declares writable x/y; data.Split is frozen (read-only).
    new_ref, summary = optimize_bundle(registry, ref, cast("Any", dataset), alias=alias)
    return Optimized(new_ref, summary)


def optimize_imported(
    registry: Registry,
    ref: ModelRef | str,
    data: str | Path,
    *,
    targets: str | Path | None = None,
    alias: str | None = None,
) -> Optimized:
    """`strato import`'s optimize step: quantize (and, for a classifier, calibrate) an imported
    bundle on the user's rows (`data`: one named array per input, `targets` optional), gated by
    the manifest's task, into its next version."""
    from strato_training.optimize import optimize_bundle
    from strato_training.quantize_data import QuantizeData

    bundle = registry.open(ref)
    names = [spec.name for spec in bundle.manifest.inputs]
    rows = QuantizeData.load(data, targets, input_names=names)
    new_ref, summary = optimize_bundle(registry, bundle.ref, data=rows, alias=alias)
    return Optimized(new_ref, summary)


@dataclass(frozen=True)
class Served:
    """The test split predicted through `strato.Client(Local)`: scores and batch-1 latency."""

    model: str
    served_by: str
    precision: str | None
    accuracy: float
    macro_f1: float
    p50_latency_ms: float
    p99_latency_ms: float
    latency_samples: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def predict_step(
    registry: Registry, ref: ModelRef, dataset: Dataset, *, latency_samples: int = 200
) -> Served:
    """Predict the test split in one call, then `latency_samples` rows one at a time."""
    from strato import Client, Local

    with Client(edge=Local(registry)) as client:
        prediction = client.predict(str(ref), dataset.test.x)
        scores = evaluate_logits(prediction.output, dataset.test.y, dataset.labels)
        latencies = [
            client.predict(str(ref), row[None]).latency_ms
            for row in dataset.test.x[:latency_samples]
        ]
    return Served(
        model=f"{prediction.model_name}:{prediction.model_version}",
        served_by=prediction.served_by,
        precision=prediction.precision,
        accuracy=round(scores.accuracy, 4),
        macro_f1=round(scores.macro_f1, 4),
        p50_latency_ms=round(float(np.percentile(latencies, 50)), 4),
        p99_latency_ms=round(float(np.percentile(latencies, 99)), 4),
        latency_samples=len(latencies),
    )
