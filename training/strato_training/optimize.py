"""Registry-level steps: calibrate and quantize a published version into the next version.

`optimize_bundle(registry, ref, dataset)` is the one call the quickstart makes: calibration on
the validation split, int8-static (QDQ + QOperator) with the accuracy gate on the test split,
latency of fp32 and every accurate artifact on this machine, and `serving.default` set to the
fastest accurate artifact (never one slower than fp32). Returns the new `ModelRef` and a summary.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from strato import BundleError

from strato_training.bundle_edit import NewFile, add_artifacts
from strato_training.calibrate import calibrate
from strato_training.quantize import (
    evaluate_artifact,
    gate,
    measure_latency,
    pick_default,
    predict_logits,
    quantize,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    from strato import Artifact, Bundle, ModelRef, Registry

    from strato_training.pipeline import QuickstartContext
    from strato_training.quantize import QuantizedArtifact

__all__ = [
    "Dataset",
    "Split",
    "calibrate_bundle",
    "optimize_bundle",
    "quantize_bundle",
    "quickstart_step",
]


class Split(Protocol):
    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]


class Dataset(Protocol):
    """What `strato_training.data.load_dataset` returns (only these attributes are read)."""

    @property
    def train(self) -> Split: ...
    @property
    def val(self) -> Split: ...
    @property
    def test(self) -> Split: ...


def _fp32(bundle: Bundle) -> Artifact:
    for artifact in bundle.models("onnx"):
        if artifact.precision in (None, "fp32"):
            return artifact
    raise BundleError(f"{bundle.ref} has no fp32 ONNX artifact to start from")


def _say(on_step: Callable[[str], None] | None, text: str) -> None:
    if on_step is not None:
        on_step(text)


REPORT = "report.json"


def _report_update(bundle: Bundle, workdir: Path, updates: dict[str, Any]) -> list[NewFile]:
    """The bundle's report.json (from evaluate) with `updates` merged in, as a file to add."""
    if not any(a.path == REPORT for a in bundle.manifest.artifacts):
        return []
    report = json.loads(bundle.path_of(REPORT).read_text())
    if not isinstance(report, dict):
        return []
    target = workdir / REPORT
    target.write_text(json.dumps({**report, **updates}, indent=2) + "\n")
    return [(target, {"path": REPORT, "kind": "file"})]


def calibration_for(bundle: Bundle, dataset: Dataset, target_precision: float) -> dict[str, Any]:
    logits = predict_logits(bundle.path_of(_fp32(bundle)), dataset.val.x)
    return calibrate(logits, dataset.val.y, target_precision=target_precision).to_manifest()


def calibrate_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset,
    *,
    target_precision: float = 0.99,
) -> tuple[ModelRef, dict[str, Any]]:
    """Temperature + ECE + cascade threshold into `manifest.calibration` of the next version."""
    bundle = registry.open(ref)
    found = calibration_for(bundle, dataset, target_precision)
    with tempfile.TemporaryDirectory(prefix="strato-calibrate-") as tmp:
        files = _report_update(bundle, Path(tmp), {"calibration": found})
        new_ref = add_artifacts(registry, bundle.ref, files, calibration=found, note="calibrate")
    return new_ref, {"ref": str(new_ref), "from": bundle.ref, "calibration": found}


def _evaluate(
    bundle: Bundle,
    workdir: Path,
    dataset: Dataset,
    modes: Sequence[str],
    samples: int,
    on_step: Callable[[str], None] | None,
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    fp32 = _fp32(bundle)
    fp32_file = bundle.path_of(fp32)
    made = []
    for mode in modes:
        _say(on_step, f"quantize {mode}")
        made += quantize(fp32_file, workdir, mode, calibration_x=dataset.train.x, samples=samples)
    _say(on_step, "evaluate on the test split")
    reference = predict_logits(fp32_file, dataset.test.x)
    metrics = {
        fp32.path: evaluate_artifact(
            fp32_file, dataset.test.x, dataset.test.y, reference, fp32.size
        )
    }
    for item in made:
        found = evaluate_artifact(
            workdir / item.path, dataset.test.x, dataset.test.y, reference, fp32.size
        )
        metrics[item.path] = {**found, "precision": item.precision, "format": item.format}
    return made, metrics


def _time_and_pick(
    bundle: Bundle,
    workdir: Path,
    made: Sequence[QuantizedArtifact],
    metrics: dict[str, dict[str, Any]],
    dataset: Dataset,
    batch: int,
) -> tuple[str, str]:
    """Time fp32 and every artifact (into `metrics[path]["latency"]`); pick the default."""
    fp32 = _fp32(bundle)
    files = {fp32.path: bundle.path_of(fp32), **{m.path: workdir / m.path for m in made}}
    timed = measure_latency(list(files.values()), dataset.test.x, batch=batch)
    latency = {path: timed[str(file)] for path, file in files.items()}
    for path, timing in latency.items():
        metrics[path]["latency"] = timing
    return pick_default(fp32.path, latency, metrics)


def quantize_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset,
    *,
    modes: Sequence[str] = ("int8-static",),
    samples: int = 256,
    max_drop: float = 1.0,
    force: bool = False,
    calibration: dict[str, Any] | None = None,
    latency_batch: int = 32,
    on_step: Callable[[str], None] | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Quantize, gate, time, pick the default and publish the next version of `ref`."""
    bundle = registry.open(ref)
    fp32 = _fp32(bundle)
    with tempfile.TemporaryDirectory(prefix="strato-quantize-") as tmp:
        workdir = Path(tmp)
        made, metrics = _evaluate(bundle, workdir, dataset, modes, samples, on_step)
        gate({m.path: metrics[m.path] for m in made}, max_drop=max_drop, force=force)
        _say(on_step, f"latency at batch {latency_batch} on this CPU")
        default, reason = _time_and_pick(bundle, workdir, made, metrics, dataset, latency_batch)
        serving = {
            "default": default,
            "default_reason": reason,
            "measured_on": f"onnxruntime CPU, {platform.machine()} {platform.processor()}".strip(),
        }
        files: list[NewFile] = [(workdir / m.path, m.artifact_spec()) for m in made]
        quantization = {"default": default, "default_reason": reason, "artifacts": metrics}
        updates = {"quantization": quantization}
        if calibration is not None:
            updates["calibration"] = calibration
        files += _report_update(bundle, workdir, updates)
        _say(on_step, "publish")
        new_ref = add_artifacts(
            registry,
            bundle.ref,
            files,
            metrics=metrics,
            calibration=calibration,
            serving=serving,
            note="quantize " + ", ".join(modes),
        )
    summary = {
        "ref": str(new_ref),
        "from": bundle.ref,
        "fp32": fp32.path,
        "default": default,
        "default_reason": reason,
        "artifacts": metrics,
    }
    if calibration is not None:
        summary["calibration"] = calibration
    return new_ref, summary


def optimize_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset,
    *,
    samples: int = 256,
    max_drop: float = 1.0,
    force: bool = False,
    target_precision: float = 0.99,
    modes: Sequence[str] = ("int8-static",),
    on_step: Callable[[str], None] | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Calibrate + int8-static (QDQ and QOperator) + accuracy gate + fastest default, published
    as ONE new version. The summary holds calibration, per-artifact metrics and the default."""
    bundle = registry.open(ref)
    _say(on_step, "calibrate on the validation split")
    found = calibration_for(bundle, dataset, target_precision)
    return quantize_bundle(
        registry,
        bundle.ref,
        dataset,
        modes=modes,
        samples=samples,
        max_drop=max_drop,
        force=force,
        calibration=found,
        on_step=on_step,
    )


def quickstart_step(ctx: QuickstartContext) -> None:
    """The quickstart's optimize step (insert it after "publish"): calibrate + int8-static on
    the published version; the context then points at the new version, whose default serves."""
    ref, summary = optimize_bundle(ctx.registry, ctx.need("ref"), ctx.need("dataset"))
    ctx.ref = ref
    ctx.bundle = ctx.registry.open(ref)
    ctx.summary["optimize"] = summary
