"""Registry-level steps: calibrate and quantize a published version into the next version.

`quantize_bundle(registry, ref, dataset)` (or `data=QuantizeData.load("x.npz", ...)` for an
imported model) builds the recipes that fit the graph, gates each by the manifest's `task` on
every output, searches per layer when nothing passes, times fp32 and every artifact that passed
on this machine and sets `serving.default` to the fastest (never one slower than fp32).
`optimize_bundle` also fits the temperature and cascade threshold of a classifier, on the
artifact the edge will serve, and publishes both as ONE new version; `alias="prod"` moves an
alias to it. `calibrate_bundle` calibrates alone (classifiers only: `ConfigError` otherwise).
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from strato import BundleError, ConfigError

from strato_training.calibrate import calibrate
from strato_training.gates import GateConfig
from strato_training.measure import predict_logits
from strato_training.publish import NewFile, add_artifacts
from strato_training.quantize_data import QuantizeData
from strato_training.quantize_run import QuantizeOptions, QuantizeOutcome, run_quantization

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    from strato import Artifact, Bundle, ModelRef, Registry

__all__ = [
    "Dataset",
    "Split",
    "calibrate_bundle",
    "calibration_for",
    "optimize_bundle",
    "quantize_bundle",
]

REPORT = "report.json"


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


def _data_for(bundle: Bundle, dataset: Dataset | None, data: QuantizeData | None) -> QuantizeData:
    if data is not None:
        return data
    inputs = [spec.name for spec in bundle.manifest.inputs]
    if dataset is None:
        raise ConfigError(
            f"{bundle.ref} needs calibration and gate data: --data FILE.npz with one array per "
            f"input ({', '.join(inputs)}), or --dataset for a model trained by strato train"
        )
    if len(inputs) != 1:
        raise ConfigError(f"a built-in dataset feeds one input; {bundle.ref} has {inputs}")
    return QuantizeData.from_dataset(dataset, inputs[0])


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


def calibration_for(
    bundle: Bundle,
    dataset: Dataset | None,
    target_precision: float,
    *,
    data: QuantizeData | None = None,
    artifact: Path | None = None,
    artifact_path: str | None = None,
) -> dict[str, Any]:
    """Temperature + cascade threshold of a classifier, fitted on the logits of the artifact
    the edge serves (`artifact`, else the bundle's serving default) on the validation rows."""
    task = bundle.manifest.task
    if task != "classification":
        raise ConfigError(
            f"{bundle.ref} is {_a(task)} {task} model: temperature scaling and the cascade threshold "
            "apply to classifiers only (a cascade on other tasks takes confidence=)"
        )
    found = _data_for(bundle, dataset, data)
    if found.val is None or found.val_targets is None:
        raise ConfigError("calibration needs the true classes of the rows: pass --targets")
    served = bundle.select()
    file = artifact or bundle.path_of(served)
    logits = predict_logits(file, found.val)
    result = calibrate(logits, found.val_targets, target_precision=target_precision)
    return {**result.to_manifest(), "artifact": artifact_path or served.path}


def calibrate_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset | None = None,
    *,
    target_precision: float = 0.99,
    data: QuantizeData | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Temperature + ECE + cascade threshold into `manifest.calibration` of the next version."""
    bundle = registry.open(ref)
    found = calibration_for(bundle, dataset, target_precision, data=data)
    with tempfile.TemporaryDirectory(prefix="strato-calibrate-") as tmp:
        files = _report_update(bundle, Path(tmp), {"calibration": found})
        new_ref = add_artifacts(registry, bundle.ref, files, calibration=found, note="calibrate")
    return new_ref, {"ref": str(new_ref), "from": bundle.ref, "calibration": found}


def _publish(
    registry: Registry,
    bundle: Bundle,
    workdir: Path,
    outcome: QuantizeOutcome,
    calibration: dict[str, Any] | None,
    *,
    note: str,
    alias: str | None,
) -> ModelRef:
    serving = {
        "default": outcome.default,
        "default_reason": outcome.reason,
        "measured_on": f"onnxruntime CPU, {platform.machine()} {platform.processor()}".strip(),
    }
    files: list[NewFile] = [(workdir / m.path, m.artifact_spec()) for m in outcome.made]
    quantization = {
        "default": outcome.default,
        "default_reason": outcome.reason,
        "artifacts": outcome.metrics,
        "refused": outcome.refused,
    }
    updates: dict[str, Any] = {"quantization": quantization}
    if calibration is not None:
        updates["calibration"] = calibration
    files += _report_update(bundle, workdir, updates)
    return add_artifacts(
        registry,
        bundle.ref,
        files,
        metrics=outcome.metrics,
        calibration=calibration,
        serving=serving,
        note=note,
        alias=alias,
    )


def quantize_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset | None = None,
    *,
    data: QuantizeData | None = None,
    modes: Sequence[str] = ("auto",),
    samples: int = 256,
    max_drop: float = 1.0,
    force: bool = False,
    calibration: dict[str, Any] | None = None,
    calibrate_precision: float | None = None,
    gate: GateConfig | None = None,
    search: bool = True,
    max_trials: int = 24,
    latency_batch: int = 32,
    alias: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Quantize, gate by task, (search), time, pick the default, [calibrate the default when
    `calibrate_precision`] and publish the next version of `ref` (moving `alias` to it)."""
    bundle = registry.open(ref)
    fp32 = _fp32(bundle)
    found = _data_for(bundle, dataset, data)
    options = QuantizeOptions(
        modes=tuple(modes),
        samples=samples,
        gate=gate or GateConfig(max_drop=max_drop),
        force=force,
        search=search,
        max_trials=max_trials,
        latency_batch=latency_batch,
    )
    task = bundle.manifest.task
    if calibrate_precision is not None and task != "classification":
        raise ConfigError(
            f"{bundle.ref} is {_a(task)} {task} model: calibration (temperature, cascade threshold) "
            "applies to classifiers only"
        )
    if calibrate_precision is not None and found.val_targets is None:
        raise ConfigError("calibration needs the true classes of the rows: pass --targets")
    with tempfile.TemporaryDirectory(prefix="strato-quantize-") as tmp:
        workdir = Path(tmp)
        outcome = run_quantization(
            bundle.path_of(fp32), fp32.path, workdir, task, found, options, on_step
        )
        if calibrate_precision is not None:
            _say(on_step, f"calibrate {outcome.default} on the validation rows")
            new = outcome.default != fp32.path
            calibration = calibration_for(
                bundle,
                dataset,
                calibrate_precision,
                data=found,
                artifact=workdir / outcome.default if new else None,
                artifact_path=outcome.default,
            )
        _say(on_step, "publish")
        note = "quantize " + ", ".join(modes)
        new_ref = _publish(registry, bundle, workdir, outcome, calibration, note=note, alias=alias)
    summary: dict[str, Any] = {
        "ref": str(new_ref),
        "from": bundle.ref,
        "task": task,
        "fp32": fp32.path,
        "default": outcome.default,
        "default_reason": outcome.reason,
        "artifacts": outcome.metrics,
        "refused": outcome.refused,
        "data": {"source": found.source, "note": found.note},
    }
    if outcome.search is not None:
        summary["search"] = outcome.search
    if alias:
        summary["alias"] = alias
    if calibration is not None:
        summary["calibration"] = calibration
    return new_ref, summary


def optimize_bundle(
    registry: Registry,
    ref: str | ModelRef,
    dataset: Dataset | None = None,
    *,
    data: QuantizeData | None = None,
    samples: int = 256,
    max_drop: float = 1.0,
    force: bool = False,
    target_precision: float = 0.99,
    modes: Sequence[str] = ("auto",),
    calibrate: bool | None = None,
    alias: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Quantize + gate + fastest default, then (for a classifier with labelled rows, or when
    `calibrate`) the temperature and cascade threshold fitted on that default, published as ONE
    new version. `calibrate=True` on a model that is not a classifier is a `ConfigError`."""
    bundle = registry.open(ref)
    if calibrate is None:  # a classifier with labelled rows; anything else is not calibrated
        labelled = data is None or data.val_targets is not None
        calibrate = bundle.manifest.task == "classification" and labelled
    return quantize_bundle(
        registry,
        bundle.ref,
        dataset,
        data=data,
        modes=modes,
        samples=samples,
        max_drop=max_drop,
        force=force,
        calibrate_precision=target_precision if calibrate else None,
        alias=alias,
        on_step=on_step,
    )


def _a(word: str) -> str:
    """The indefinite article for `word` ("an embedding", "a regression")."""
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"
