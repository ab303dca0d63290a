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
from typing import TYPE_CHECKING, Any, TypeVar

from strato import ConfigError

from strato_training.evaluate import CONFUSION_PNG, CURVES_PNG, REPORT, EvalReport
from strato_training.export import ONNX_MODEL, ExportConfig, export_onnx
from strato_training.publish import PublishConfig
from strato_training.steps import (
    Exported,
    Optimized,
    Published,
    Served,
    evaluate_run,
    export_run,
    export_step,
    load_data,
    optimize_step,
    predict_step,
    publish_step,
    record_parity,
    train_step,
)
from strato_training.trainer import TrainConfig, TrainResult

if TYPE_CHECKING:
    from pathlib import Path

    from strato import Bundle, Registry

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
        """Where the quickstart's training run is written."""
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
