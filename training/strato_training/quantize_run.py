"""One quantization run in a work folder: build each recipe, gate it by task, search per layer
when nothing passes, time what passed, pick the serving default.

`run_quantization` is what `strato_training.optimize.quantize_bundle` calls between opening the
source version and publishing the next one. With ``auto`` the artifacts that fail their gate
are refused (listed, not published); with an explicit mode a failure raises
`QuantizationError` unless `force`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strato import ExportError, QuantizationError

from strato_training.gates import GateConfig, GateResult, gate_outputs
from strato_training.measure import measure_latency, pick_default, rows_of, run_outputs
from strato_training.quantize import (
    RECIPES,
    QuantizedArtifact,
    build_recipe,
    calibration_samples,
    preprocessed,
    quantizable_nodes,
    recipes_for,
)
from strato_training.sensitivity import search_layers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import numpy as np

    from strato_training.measure import Feeds
    from strato_training.quantize_data import QuantizeData

__all__ = ["QuantizeOptions", "QuantizeOutcome", "run_quantization"]


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize: modes, calibration rows, gate limits, search budget, latency batch."""

    modes: tuple[str, ...] = ("auto",)
    samples: int = 256
    gate: GateConfig = field(default_factory=GateConfig)
    force: bool = False
    search: bool = True
    max_trials: int = 24
    latency_batch: int = 32


@dataclass
class QuantizeOutcome:
    """`made`: the artifacts to publish; `metrics`: fp32's and theirs; `refused`: artifacts
    that failed their gate (auto mode) or could not be built; `search`: the per-layer search."""

    made: list[QuantizedArtifact]
    metrics: dict[str, dict[str, Any]]
    refused: dict[str, dict[str, Any]]
    default: str
    reason: str
    search: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Context:
    fp32_file: Path
    workdir: Path
    task: str
    data: QuantizeData
    reference: Feeds
    calibration: Feeds | np.ndarray[Any, Any] | None
    options: QuantizeOptions

    def judge(self, path: Path) -> GateResult:
        candidate = run_outputs(path, self.data.gate)
        return gate_outputs(
            self.task,
            self.reference,
            candidate,
            targets=self.data.targets,
            config=self.options.gate,
        )


def _say(on_step: Callable[[str], None] | None, text: str) -> None:
    if on_step is not None:
        on_step(text)


def _artifact_metrics(
    item: QuantizedArtifact, result: GateResult, workdir: Path, fp32_size: int
) -> dict[str, Any]:
    size = (workdir / item.path).stat().st_size
    found = {
        **result.to_metrics(),
        "size": size,
        "size_ratio": round(size / fp32_size, 4),
        "precision": item.precision,
        "format": item.format,
        "recipe": item.recipe,
    }
    if item.fp32_layers:
        found["fp32_layers"] = list(item.fp32_layers)
    if item.notes:
        found["notes"] = list(item.notes)
    return found


def _gate_error(path: str, item: QuantizedArtifact, result: GateResult) -> QuantizationError:
    worst = result.worst
    return QuantizationError(
        f"{path} ({item.recipe}) failed the {result.task} gate: {worst.describe()} "
        "(use --force to publish anyway)",
        recipe=item.recipe,
        output=worst.output,
        figure=worst.figure,
        value=worst.value,
        row=worst.row,
    )


def _build_all(
    ctx: _Context, recipes: Sequence[str], fp32_size: int, on_step: Callable[[str], None] | None
) -> tuple[list[QuantizedArtifact], dict[str, GateResult], dict[str, dict[str, Any]]]:
    auto = "auto" in ctx.options.modes
    made: list[QuantizedArtifact] = []
    results: dict[str, GateResult] = {}
    refused: dict[str, dict[str, Any]] = {}
    for recipe in recipes:
        _say(on_step, f"quantize: {recipe}")
        try:
            item = build_recipe(recipe, ctx.fp32_file, ctx.workdir, calibration=ctx.calibration)
        except QuantizationError as exc:
            if not auto:
                raise
            refused[RECIPES[recipe].path("model")] = {"recipe": recipe, "error": str(exc)}
            continue
        made.append(item)
        results[item.path] = ctx.judge(ctx.workdir / item.path)
    return made, results, refused


def _search(
    ctx: _Context, made: list[QuantizedArtifact], results: dict[str, GateResult]
) -> tuple[QuantizedArtifact, GateResult, dict[str, Any]] | None:
    """Per-layer search on the int8 artifact closest to passing."""
    int8 = [m for m in made if m.precision == "int8"]
    if not int8:
        return None
    best = min(int8, key=lambda m: results[m.path].severity)
    source, _ = preprocessed(ctx.fp32_file, ctx.workdir)
    layers = quantizable_nodes(source, best.recipe)
    trial_path = f"trial.{best.recipe}.onnx"

    def judge(fp32_layers: Sequence[str]) -> GateResult:
        build_recipe(
            best.recipe,
            ctx.fp32_file,
            ctx.workdir,
            calibration=ctx.calibration,
            nodes_to_exclude=fp32_layers,
            path=trial_path,
        )
        return ctx.judge(ctx.workdir / trial_path)

    found = search_layers(layers, judge, max_trials=ctx.options.max_trials)
    summary = {"recipe": best.recipe, "from": best.path, **found.to_dict()}
    if not found.passed:
        return best, results[best.path], summary
    item = build_recipe(
        best.recipe,
        ctx.fp32_file,
        ctx.workdir,
        calibration=ctx.calibration,
        nodes_to_exclude=found.fp32_layers,
    )
    return item, ctx.judge(ctx.workdir / item.path), summary


def _time(
    ctx: _Context,
    fp32_path: str,
    paths: Sequence[str],
    metrics: dict[str, dict[str, Any]],
) -> None:
    files = {fp32_path: ctx.fp32_file, **{p: ctx.workdir / p for p in paths}}
    batch = ctx.options.latency_batch
    try:
        timed = measure_latency(list(files.values()), ctx.data.gate, batch=batch)
    except ExportError:
        rows = rows_of(ctx.data.gate)
        if rows == batch:
            raise
        # A graph with a fixed batch axis: time it at the batch the gate rows showed it takes.
        timed = measure_latency(list(files.values()), ctx.data.gate, batch=rows)
    for path, file in files.items():
        metrics[path]["latency"] = timed[str(file)]


def run_quantization(
    fp32_file: Path,
    fp32_path: str,
    workdir: Path,
    task: str,
    data: QuantizeData,
    options: QuantizeOptions,
    on_step: Callable[[str], None] | None = None,
) -> QuantizeOutcome:
    """Build, gate, (search), time and pick; nothing is published here."""
    recipes = list(dict.fromkeys(r for m in options.modes for r in recipes_for(m, fp32_file)))
    needs = any(RECIPES[r].needs_calibration for r in recipes)
    calibration = calibration_samples(data.calibration, options.samples) if needs else None
    _say(on_step, f"fp32 reference on {len(next(iter(data.gate.values())))} gate rows")
    reference = run_outputs(fp32_file, data.gate)
    ctx = _Context(fp32_file, workdir, task, data, reference, calibration, options)
    fp32_size = fp32_file.stat().st_size
    own = gate_outputs(task, reference, reference, targets=data.targets, config=options.gate)
    fp32_metrics = {k: v for k, v in own.to_metrics().items() if k not in ("checks", "outputs")}
    metrics = {
        fp32_path: {**fp32_metrics, "gate": "reference", "size": fp32_size, "size_ratio": 1.0}
    }
    made, results, refused = _build_all(ctx, recipes, fp32_size, on_step)
    for item in made:
        metrics[item.path] = _artifact_metrics(item, results[item.path], workdir, fp32_size)
    search = None
    auto = "auto" in options.modes
    if options.search and auto and made and not any(r.passed for r in results.values()):
        _say(on_step, "no uniform recipe passes: per-layer sensitivity search")
        searched = _search(ctx, made, results)
        if searched is not None:
            item, result, search = searched
            if result.passed and item.fp32_layers:
                made.append(item)
                results[item.path] = result
                metrics[item.path] = {
                    **_artifact_metrics(item, result, workdir, fp32_size),
                    "search": search,
                }
    return _settle(ctx, fp32_path, made, results, metrics, refused, search, on_step)


def _settle(
    ctx: _Context,
    fp32_path: str,
    made: list[QuantizedArtifact],
    results: dict[str, GateResult],
    metrics: dict[str, dict[str, Any]],
    refused: dict[str, dict[str, Any]],
    search: dict[str, Any] | None,
    on_step: Callable[[str], None] | None,
) -> QuantizeOutcome:
    """Apply the failure policy, time fp32 and the survivors, pick the default."""
    options = ctx.options
    if not made:  # auto went on past every recipe ORT could not run: nothing is left
        first = next(iter(refused.values()), {})
        raise QuantizationError(
            "no recipe could be built: "
            + "; ".join(str(r.get("error", "")) for r in refused.values()),
            recipe=str(first.get("recipe", "")),
        )
    failed = [m for m in made if not results[m.path].passed]
    if failed and not options.force and ("auto" not in options.modes or len(failed) == len(made)):
        worst = min(failed, key=lambda m: results[m.path].severity)
        raise _gate_error(worst.path, worst, results[worst.path])
    keep = made if options.force else [m for m in made if results[m.path].passed]
    for item in made:
        if item not in keep:
            refused[item.path] = metrics.pop(item.path)
    timed = [m.path for m in keep]
    # The uniform recipe a mixed artifact came from is timed too (its cost), even if refused.
    parents = [str(search["from"])] if search and any(m.fp32_layers for m in keep) else []
    refused_parents = [p for p in parents if p not in timed]
    for parent in refused_parents:
        metrics[parent] = refused[parent]
    _say(on_step, f"latency at batch {options.latency_batch} on this CPU")
    _time(ctx, fp32_path, [*timed, *refused_parents], metrics)
    for item in keep:
        if item.fp32_layers and parents:
            _cost(metrics[item.path], metrics[parents[0]])
    for parent in refused_parents:
        refused[parent] = metrics.pop(parent)
    default, reason = pick_default(
        fp32_path, {p: metrics[p]["latency"] for p in [fp32_path, *timed]}, metrics
    )
    return QuantizeOutcome(keep, metrics, refused, default, reason, search)


def _cost(mixed: dict[str, Any], uniform: dict[str, Any]) -> None:
    """What keeping layers in fp32 cost against the uniform recipe: size and latency ratios."""
    mixed["cost_vs_uniform"] = {
        "size_ratio": round(mixed["size"] / uniform["size"], 4),
        "latency_ratio": round(mixed["latency"]["p50_ms"] / uniform["latency"]["p50_ms"], 4),
        "uniform": uniform.get("gate_figure", ""),
    }
