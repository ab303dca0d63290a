"""The training pipeline as plain typed steps, and the quickstart `make demo` runs with them.

Each step is a function with typed inputs and a frozen result; nothing is passed by name
through a shared context::

    dataset = load_data(train_config)
    trained = train_step(train_config, dataset, run_dir)           # TrainResult
    report = evaluate_run(run_dir, result=trained, dataset=dataset)
    exported = export_step(run_dir, trained, dataset)              # Exported (ONNX + parity)
    published = publish_step(run_dir, "digits-mlp", registry)      # Published (verified bundle)
    optimized = optimize_step(registry, published.ref, dataset)    # Optimized (next version)
    served = predict_step(registry, optimized.ref, dataset)        # Served (Client(Local))

`run_quickstart(QuickstartConfig(...), registry)` runs them in that order (then the serving half
in `strato_training.demo`) and returns a `QuickstartSummary`. `strato import` runs the same
export → parity → publish order for models that come from elsewhere (`strato_training.importer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from strato import ConfigError

from strato_training.evaluate import (
    CONFUSION_PNG,
    CURVES_PNG,
    REPORT,
    EvalReport,
    evaluate,
    evaluate_logits,
    predict_onnx,
)
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
    from pathlib import Path

    from strato import Bundle, ModelRef, Registry

    from strato_training.data import Dataset

__all__ = [
    "STEP_DESCRIPTIONS",
    "Exported",
    "Optimized",
    "Published",
    "QuickstartConfig",
    "QuickstartSummary",
    "Served",
    "Spine",
    "evaluate_run",
    "export_run",
    "export_step",
    "load_data",
    "optimize_step",
    "predict_step",
    "publish_step",
    "record_parity",
    "run_quickstart",
    "run_spine",
    "train_step",
]

OnStep = Callable[[str, str, float], None]
"""Called after each step with (name, description, seconds)."""
T = TypeVar("T")

STEP_DESCRIPTIONS = {
    "data": "load the dataset and split it",
    "train": "train the model",
    "evaluate": f"score the test split → {REPORT}, {CONFUSION_PNG}, {CURVES_PNG}",
    "export": f"export {ONNX_MODEL} with a dynamic batch axis",
    "parity": "check torch vs ONNX Runtime on the test split",
    "publish": "publish the bundle to the registry",
    "optimize": "quantize + calibrate, gate on accuracy, pick the default, move prod",
    "load": "load the bundle back and verify every sha256",
    "predict": "predict the test split through strato.Client(Local)",
    "serve-edge": "pull the served version into a device store, serve it (strato edge serve)",
    "serve-cloud": "serve the fp32 version with the Lambda handler (strato cloud local)",
    "route": "route the test split through Client(Edge, Lambda, Cascade())",
    "summary": "collect the summary",
}


# --- the steps ----------------------------------------------------------------------------


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
) -> Exported:
    """Export the trained model, gate it on parity over the test split, record export.json."""
    exported = export_onnx(
        result.model, run_dir / ONNX_MODEL, input_shape=result.input_shape, config=config
    )
    parity = record_parity(
        run_dir, result, exported, dataset, atol=atol, min_top1_agreement=min_top1_agreement
    )
    return Exported(exported, parity)


def export_run(
    run_dir: Path,
    *,
    config: ExportConfig | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    result: TrainResult | None = None,
    dataset: Dataset | None = None,
) -> tuple[ExportResult, ParityReport]:
    """`export_step` on a run folder (the model and dataset are loaded when not given)."""
    result = result or load_run(run_dir)
    dataset = dataset or dataset_for(result.config)
    done = export_step(
        run_dir, result, dataset, config=config, atol=atol, min_top1_agreement=min_top1_agreement
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


# --- the quickstart -----------------------------------------------------------------------


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart trains, where it writes, and which halves it runs."""

    workdir: Path
    name: str = "digits-mlp"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(threads=1))
    export: ExportConfig = field(default_factory=ExportConfig)
    atol: float = 1e-4
    latency_samples: int = 200
    progress: bool = True
    optimize: bool = True
    serve: bool = True

    def __post_init__(self) -> None:
        if self.atol < 0:
            raise ConfigError(f"atol must be >= 0, got {self.atol}")
        if self.latency_samples < 1:
            raise ConfigError(f"latency_samples must be >= 1, got {self.latency_samples}")
        PublishConfig(self.name)  # validates the name

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"


@dataclass(frozen=True)
class Spine:
    """What the spine (data → train → evaluate → export → parity → publish) produced."""

    dataset: Dataset
    result: TrainResult
    report: EvalReport
    exported: Exported
    published: Published


class _Clock:
    """Times each step and reports it; the timings keep the order the steps ran in."""

    def __init__(self, on_step: OnStep | None) -> None:
        self.on_step = on_step
        self.timings: dict[str, float] = {}

    def run(self, name: str, step: Callable[[], T]) -> T:
        begun = time.perf_counter()
        value = step()
        self.timings[name] = round(time.perf_counter() - begun, 3)
        if self.on_step is not None:
            self.on_step(name, STEP_DESCRIPTIONS.get(name, name), self.timings[name])
        return value


def run_spine(
    config: QuickstartConfig, registry: Registry, *, on_step: OnStep | None = None
) -> Spine:
    """data → train → evaluate → export → parity → publish, each step timed."""
    return _spine(config, registry, _Clock(on_step))


def _spine(config: QuickstartConfig, registry: Registry, clock: _Clock) -> Spine:
    run_dir = config.run_dir
    dataset = clock.run("data", lambda: load_data(config.train))
    result = clock.run(
        "train", lambda: train_step(config.train, dataset, run_dir, progress=config.progress)
    )
    report = clock.run("evaluate", lambda: evaluate_run(run_dir, result=result, dataset=dataset))
    export = clock.run(
        "export",
        lambda: export_onnx(
            result.model, run_dir / ONNX_MODEL, input_shape=result.input_shape, config=config.export
        ),
    )
    parity = clock.run(
        "parity", lambda: record_parity(run_dir, result, export, dataset, atol=config.atol)
    )
    published = clock.run("publish", lambda: publish_step(run_dir, config.name, registry))
    return Spine(dataset, result, report, Exported(export, parity), published)


@dataclass(frozen=True)
class QuickstartSummary:
    """Everything the quickstart measured; `to_dict()` is what `--json` prints."""

    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def run_quickstart(
    config: QuickstartConfig, registry: Registry, *, on_step: OnStep | None = None
) -> QuickstartSummary:
    """The whole demo: the spine, [optimize], load, predict, [serve edge + cloud, route]."""
    started = time.perf_counter()
    clock = _Clock(on_step)
    spine = _spine(config, registry, clock)
    fp32 = spine.published.ref
    optimized = (
        clock.run("optimize", lambda: optimize_step(registry, fp32, spine.dataset))
        if config.optimize
        else None
    )
    served_ref = optimized.ref if optimized is not None else fp32
    bundle = clock.run("load", lambda: registry.open(served_ref))  # verifies every sha256
    served = clock.run(
        "predict",
        lambda: predict_step(
            registry, served_ref, spine.dataset, latency_samples=config.latency_samples
        ),
    )
    fields = _summary(config, registry, spine, bundle, served)
    if optimized is not None:
        fields["optimize"] = optimized.summary
    if config.serve:
        from strato_training.demo import serve_and_route

        fields.update(
            serve_and_route(
                registry,
                edge_ref=served_ref,
                cloud_ref=fp32,
                dataset=spine.dataset,
                workdir=config.workdir,
                clock=clock.run,
            )
        )
    clock.run("summary", lambda: None)
    fields["timings"] = dict(clock.timings)
    fields["total_seconds"] = round(time.perf_counter() - started, 3)
    return QuickstartSummary(fields)


def _summary(
    config: QuickstartConfig, registry: Registry, spine: Spine, bundle: Bundle, served: Served
) -> dict[str, Any]:
    result = spine.result
    parity = spine.exported.parity
    return {
        "dataset": spine.dataset.summary(),
        "training": {
            "model": config.train.model,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 3),
            "val_accuracy": round(result.best.get("val_accuracy", 0.0), 4),
        },
        "served": served.to_dict(),
        "model": bundle.ref,
        "registry": registry.url,
        "accuracy": served.accuracy,
        "macro_f1": served.macro_f1,
        "model_size_bytes": bundle.manifest.artifact(ONNX_MODEL).size,
        "p50_latency_ms": served.p50_latency_ms,
        "parity": {"max_abs_diff": parity.max_abs_diff, "top1_agreement": parity.top1_agreement},
        "exporter": bundle.manifest.framework.get("exporter"),
        "artifacts": {a.path: str(bundle.path_of(a)) for a in bundle.manifest.artifacts},
        "run_dir": str(config.run_dir),
    }
