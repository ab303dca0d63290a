"""Run-folder steps for the CLI, and the quickstart pipeline `make demo` runs.

The quickstart is a list of `Step`s over one shared `QuickstartContext`; each step reads what
earlier steps put on the context and adds its own. To extend the demo (quantize, start an edge
server, route to the cloud), insert a step with `insert_step` instead of copying the pipeline::

    steps = insert_step(QUICKSTART_STEPS, Step("quantize", "int8 static", quantize_step), after="parity")
    run_quickstart(context, steps)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from strato import Bundle, ModelRef, Registry

    from strato_training.data import Dataset

__all__ = [
    "QUICKSTART_STEPS",
    "QuickstartContext",
    "Step",
    "dataset_for",
    "evaluate_run",
    "export_run",
    "insert_step",
    "quickstart_steps",
    "record_parity",
    "run_quickstart",
]


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


def export_run(
    run_dir: Path,
    *,
    config: ExportConfig | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    result: TrainResult | None = None,
    dataset: Dataset | None = None,
) -> tuple[ExportResult, ParityReport]:
    """Export a run to `model.onnx`, gate it on parity over the test split, record both."""
    result = result or load_run(run_dir)
    dataset = dataset or dataset_for(result.config)
    exported = export_onnx(
        result.model, run_dir / ONNX_MODEL, input_shape=result.input_shape, config=config
    )
    parity = record_parity(
        run_dir, result, exported, dataset, atol=atol, min_top1_agreement=min_top1_agreement
    )
    return exported, parity


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


# --- the quickstart ----------------------------------------------------------------------


@dataclass
class QuickstartContext:
    """Everything the quickstart steps share; each step fills in its part."""

    workdir: Path
    registry: Registry
    name: str = "digits-mlp"
    train_config: TrainConfig = field(default_factory=lambda: TrainConfig(threads=1))
    export_config: ExportConfig = field(default_factory=ExportConfig)
    atol: float = 1e-4
    latency_samples: int = 200
    progress: bool = True
    dataset: Dataset | None = None
    result: TrainResult | None = None
    report: EvalReport | None = None
    exported: ExportResult | None = None
    parity: ParityReport | None = None
    ref: ModelRef | None = None
    bundle: Bundle | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)  # servers the demo started

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def need(self, attribute: str) -> Any:
        value = getattr(self, attribute)
        if value is None:
            raise ConfigError(f"quickstart step order: {attribute!r} is not set by an earlier step")
        return value


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[QuickstartContext], None]


def _load_data(ctx: QuickstartContext) -> None:
    ctx.dataset = dataset_for(ctx.train_config)
    ctx.summary["dataset"] = ctx.dataset.summary()


def _train(ctx: QuickstartContext) -> None:
    ctx.result = train(
        ctx.train_config, out_dir=ctx.run_dir, dataset=ctx.need("dataset"), progress=ctx.progress
    )
    ctx.summary["training"] = {
        "model": ctx.train_config.model,
        "epochs_run": len(ctx.result.history),
        "best_epoch": ctx.result.best_epoch,
        "seconds": round(ctx.result.seconds, 3),
        "val_accuracy": round(ctx.result.best.get("val_accuracy", 0.0), 4),
    }


def _evaluate(ctx: QuickstartContext) -> None:
    ctx.report = evaluate_run(ctx.run_dir, result=ctx.need("result"), dataset=ctx.need("dataset"))


def _export(ctx: QuickstartContext) -> None:
    ctx.exported = export_onnx(
        ctx.need("result").model,
        ctx.run_dir / ONNX_MODEL,
        input_shape=ctx.need("dataset").input_shape,
        config=ctx.export_config,
    )


def _parity(ctx: QuickstartContext) -> None:
    ctx.parity = record_parity(
        ctx.run_dir, ctx.need("result"), ctx.need("exported"), ctx.need("dataset"), atol=ctx.atol
    )


def _publish(ctx: QuickstartContext) -> None:
    ctx.ref = publish(ctx.run_dir, PublishConfig(ctx.name), registry=ctx.registry).ref


def _load_back(ctx: QuickstartContext) -> None:
    ctx.bundle = ctx.registry.open(ctx.need("ref"))  # verifies every sha256


def _predict(ctx: QuickstartContext) -> None:
    from strato import Client, Local

    dataset: Dataset = ctx.need("dataset")
    ref = str(ctx.need("ref"))
    with Client(edge=Local(ctx.registry)) as client:
        prediction = client.predict(ref, dataset.test.x)
        scores = evaluate_logits(prediction.output, dataset.test.y, dataset.labels)
        latencies = []
        for row in dataset.test.x[: ctx.latency_samples]:
            latencies.append(client.predict(ref, row[None]).latency_ms)
    ctx.summary["served"] = {
        "model": f"{prediction.model_name}:{prediction.model_version}",
        "served_by": prediction.served_by,
        "precision": prediction.precision,
        "accuracy": round(scores.accuracy, 4),
        "macro_f1": round(scores.macro_f1, 4),
        "p50_latency_ms": round(float(np.percentile(latencies, 50)), 4),
        "p99_latency_ms": round(float(np.percentile(latencies, 99)), 4),
        "latency_samples": len(latencies),
    }


def _summarise(ctx: QuickstartContext) -> None:
    bundle: Bundle = ctx.need("bundle")
    served = ctx.summary.get("served", {})
    onnx = bundle.manifest.artifact(ONNX_MODEL)
    parity: ParityReport = ctx.need("parity")
    ctx.summary.update(
        {
            "model": bundle.ref,
            "registry": ctx.registry.url,
            "accuracy": served.get("accuracy"),
            "macro_f1": served.get("macro_f1"),
            "model_size_bytes": onnx.size,
            "p50_latency_ms": served.get("p50_latency_ms"),
            "parity": {
                "max_abs_diff": parity.max_abs_diff,
                "top1_agreement": parity.top1_agreement,
            },
            "exporter": bundle.manifest.framework.get("exporter"),
            "artifacts": {a.path: str(bundle.path_of(a)) for a in bundle.manifest.artifacts},
            "run_dir": str(ctx.run_dir),
        }
    )


QUICKSTART_STEPS: tuple[Step, ...] = (
    Step("data", "load digits and split it", _load_data),
    Step("train", "train the reference MLP", _train),
    Step("evaluate", f"score the test split → {REPORT}, {CONFUSION_PNG}, {CURVES_PNG}", _evaluate),
    Step("export", f"export {ONNX_MODEL} with a dynamic batch axis", _export),
    Step("parity", "check torch vs ONNX Runtime on the test split", _parity),
    Step("publish", "publish the bundle to the registry", _publish),
    Step("load", "load the bundle back and verify every sha256", _load_back),
    Step("predict", "predict the test split through strato.Client(Local)", _predict),
    Step("summary", "collect the summary", _summarise),
)


def quickstart_steps(*, optimize: bool = True, serve: bool = True) -> tuple[Step, ...]:
    """The demo's steps: the spine, plus calibrate/quantize and the serving half when asked."""
    steps = QUICKSTART_STEPS
    if optimize:
        from strato_training.optimize import quickstart_step

        steps = insert_step(
            steps,
            Step(
                "optimize",
                "calibrate + int8-static, gate on accuracy, pick the default",
                quickstart_step,
            ),
            after="publish",
        )
    if serve:
        from strato_training.demo import SERVING_STEPS

        for name, description, run in reversed(SERVING_STEPS):
            steps = insert_step(steps, Step(name, description, run), after="predict")
    return steps


def insert_step(
    steps: Sequence[Step], step: Step, *, after: str | None = None, before: str | None = None
) -> tuple[Step, ...]:
    """A copy of `steps` with `step` placed after (or before) the named step."""
    names = [s.name for s in steps]
    anchor = after or before
    if anchor not in names:
        raise ConfigError(f"no quickstart step {anchor!r}; steps are {names}")
    index = names.index(anchor) + (1 if after else 0)
    return (*steps[:index], step, *steps[index:])


def run_quickstart(
    ctx: QuickstartContext,
    steps: Sequence[Step] = QUICKSTART_STEPS,
    *,
    on_step: Callable[[Step, float], None] | None = None,
) -> dict[str, Any]:
    """Run `steps` in order over `ctx`; returns `ctx.summary` (with per-step seconds)."""
    started = time.perf_counter()
    for step in steps:
        begun = time.perf_counter()
        step.run(ctx)
        ctx.timings[step.name] = round(time.perf_counter() - begun, 3)
        if on_step is not None:
            on_step(step, ctx.timings[step.name])
    ctx.summary["timings"] = dict(ctx.timings)
    ctx.summary["total_seconds"] = round(time.perf_counter() - started, 3)
    return ctx.summary
