"""Publishing to a registry: a run folder as a new bundle, or a version plus new artifacts
as the next version.

A run folder holds what the earlier steps wrote (`run.json` + `model.safetensors` from `train`,
`report.json` + charts from `evaluate`, `model.onnx` + `export.json` from `export`). `publish`
copies those into a staging folder, hashes them into a manifest with `strato.make_bundle` and
hands the bundle to `Registry.publish`, which copies it in atomically as `name:version`.

`add_artifacts` publishes the NEXT version of a published one (versions are immutable) with
new files (a quantized model, a TensorRT plan) and merged metrics / calibration / serving; the
new manifest records where it came from (`parent`, `history`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import (
    BundleError,
    ConfigError,
    ModelNotFound,
    ModelRef,
    Registry,
    TensorSpec,
    make_bundle,
)

from strato_training.evaluate import CONFUSION_PNG, CURVES_PNG, REPORT
from strato_training.export import EXPORT_INFO, ONNX_MODEL
from strato_training.trainer import CHECKPOINT, RUN_INFO

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

    from strato import Bundle

__all__ = [
    "PREPROCESSING",
    "NewFile",
    "PublishConfig",
    "PublishResult",
    "add_artifacts",
    "build_bundle",
    "preprocessing_for",
    "publish",
]

PREPROCESSING: dict[str, Any] = {
    "layout": "NCHW",
    "dtype": "float32",
    "grayscale": True,
    "resize": [28, 28],
    "scale": "pixel / 255 (uint8 images), values in [0, 1]",
}


def preprocessing_for(input_shape: tuple[int, ...], dataset: str) -> dict[str, Any]:
    """What a trained model expects: images as strato's datasets make them, or tabular rows."""
    if len(input_shape) != 3:
        return {
            "layout": "rows",
            "dtype": "float32",
            "features": list(input_shape),
            "dataset": dataset,
        }
    channels, height, width = input_shape
    return PREPROCESSING | {
        "grayscale": channels == 1,
        "channels": channels,
        "resize": [height, width],
        "dataset": dataset,
    }


@dataclass(frozen=True)
class PublishConfig:
    """`registry`: a folder or s3:// URL (None: `STRATO_REGISTRY`, else `.strato/registry`)."""

    name: str
    version: str | None = None
    registry: str | None = None
    alias: str | None = None
    include_checkpoint: bool = True

    def __post_init__(self) -> None:
        text = self.name if self.version is None else f"{self.name}:{self.version}"
        try:
            ModelRef.parse(text)
            if self.alias:
                ModelRef.parse(f"{self.name}@{self.alias}")
        except ModelNotFound as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class PublishResult:
    ref: ModelRef
    registry: str
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"ref": str(self.ref), "registry": self.registry, "manifest": self.manifest}


def _read_json(path: Path, step: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path} is missing; run `strato {step}` on this run folder first")
    return dict(json.loads(path.read_text()))


def build_bundle(
    run_dir: str | os.PathLike[str],
    staging: Path,
    *,
    name: str,
    version: str,
    include_checkpoint: bool = True,
) -> Bundle:
    """Copy a run's files into `staging` and write the manifest that hashes them."""
    run = Path(run_dir)
    info = _read_json(run / RUN_INFO, "train")
    export = _read_json(run / EXPORT_INFO, "export")
    if not (run / ONNX_MODEL).is_file():
        raise ConfigError(f"{run / ONNX_MODEL} is missing; run `strato export {run}` first")
    report = _read_json(run / REPORT, "evaluate") if (run / REPORT).is_file() else {}
    optional = [REPORT, CONFUSION_PNG, CURVES_PNG] + ([CHECKPOINT] if include_checkpoint else [])
    artifacts = _stage_files(run, staging, optional)
    labels = tuple(str(label) for label in info["labels"])
    onnx_info = export["onnx"]
    training = {
        k: info["config"][k] for k in ("dataset", "model", "epochs", "batch_size", "lr", "seed")
    }
    training |= {
        k: info[k] for k in ("best_epoch", "stopped_early", "world_size", "seconds", "parameters")
    }
    model_input = TensorSpec(onnx_info["input_name"], "FP32", (-1, *info["input_shape"]))
    preprocessing = preprocessing_for(tuple(info["input_shape"]), info["config"]["dataset"])
    inputs, extra = [model_input], {"training": training}
    if "wire" in export:  # preprocessing baked into the graph: the wire takes raw pixels
        inputs = [TensorSpec.from_dict(spec) for spec in export["wire"]["inputs"]]
        preprocessing = export["preprocessing"] | {"dataset": info["config"]["dataset"]}
        extra["model_signature"] = export["model_signature"]
    return make_bundle(
        staging,
        name=name,
        version=version,
        inputs=inputs,
        outputs=[TensorSpec(onnx_info["output_name"], "FP32", (-1, len(labels)))],
        artifacts=artifacts,
        framework=export["framework"],
        opset=int(onnx_info["opset"]),
        labels=labels,
        preprocessing=preprocessing,
        metrics=_metrics(export, report, [a["path"] for a in artifacts]),
        extra=extra,
    )


def _stage_files(run: Path, staging: Path, optional: list[str]) -> list[dict[str, Any]]:
    """Copy model.onnx and whichever optional files the run has; their artifact specs."""
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / ONNX_MODEL, staging / ONNX_MODEL)
    artifacts: list[dict[str, Any]] = [{"path": ONNX_MODEL, "kind": "onnx", "precision": "fp32"}]
    for file in optional:
        if (run / file).is_file():
            shutil.copy2(run / file, staging / file)
            artifacts.append({"path": file, "kind": "file"})
    return artifacts


def _metrics(export: dict[str, Any], report: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Scores keyed by artifact path: the ONNX model's (with parity), the checkpoint's."""
    metrics: dict[str, Any] = {
        ONNX_MODEL: dict(export.get("onnx_eval", {})) | {"parity": export["parity"]}
    }
    if report and CHECKPOINT in paths:
        metrics[CHECKPOINT] = {
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "samples": report["samples"],
            "split": "test",
        }
    return metrics


def publish(
    run_dir: str | os.PathLike[str], config: PublishConfig, *, registry: Registry | None = None
) -> PublishResult:
    """Build the bundle from `run_dir` and publish it as `name:version` (next version if unset).

    `registry` (an open `Registry`) overrides `config.registry`.
    """
    registry = registry or Registry(config.registry)
    version = config.version or registry.next_version(config.name)
    with tempfile.TemporaryDirectory(prefix="strato-publish-") as scratch:
        bundle = build_bundle(
            run_dir,
            Path(scratch) / version,
            name=config.name,
            version=version,
            include_checkpoint=config.include_checkpoint,
        )
        ref = registry.publish(bundle, alias=config.alias)
        manifest = bundle.manifest.to_dict()
    return PublishResult(ref=ref, registry=registry.url, manifest=manifest)


NewFile = tuple[Path, dict[str, Any]]
"""(source file, artifact spec): spec has `path` (inside the bundle) and optional kind,
precision, format, tensorrt — the fields of `strato.Artifact`."""


def _merge(old: Mapping[str, Any], new: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(old)
    for key, value in (new or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _add_files(root: Path, files: Sequence[NewFile]) -> list[dict[str, Any]]:
    specs = []
    for source, spec in files:
        relpath = str(spec["path"])
        target = (root / relpath).resolve()
        if root.resolve() not in target.parents:
            raise BundleError(f"artifact path {relpath!r} escapes the bundle")
        if not Path(source).is_file():
            raise BundleError(f"cannot add {relpath}: {source} does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        specs.append(dict(spec))
    return specs


def add_artifacts(
    registry: Registry,
    ref: str | ModelRef,
    files: Sequence[NewFile] = (),
    *,
    metrics: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    serving: Mapping[str, Any] | None = None,
    note: str | None = None,
    alias: str | None = None,
) -> ModelRef:
    """Publish `ref` + `files` (+ merged metrics/calibration/serving) as the next version.

    >>> add_artifacts(reg, "digits-mlp:1", [(Path("q.onnx"), {"path": "model.int8.onnx",
    ...     "kind": "onnx", "precision": "int8", "format": "qoperator"})])
    ModelRef(name='digits-mlp', version='2', alias=None)
    """
    source = registry.open(ref)
    version = registry.next_version(source.name)
    manifest = source.manifest
    with tempfile.TemporaryDirectory(prefix=f"strato-{source.name}-") as tmp:
        root = Path(tmp) / version
        shutil.copytree(
            source.root, root, ignore=shutil.ignore_patterns("manifest.json", ".manifest.*")
        )
        specs = {
            a.path: {k: v for k, v in a.to_dict().items() if k not in ("sha256", "size")}
            for a in manifest.artifacts
        }
        specs.update({str(s["path"]): s for s in _add_files(root, files)})
        history = [*manifest.extra.get("history", []), {"from": source.ref, "note": note or ""}]
        bundle = make_bundle(
            root,
            name=source.name,
            version=version,
            inputs=manifest.inputs,
            outputs=manifest.outputs,
            artifacts=list(specs.values()),
            framework=manifest.framework,
            opset=manifest.opset,
            task=manifest.task,
            labels=manifest.labels,
            preprocessing=manifest.preprocessing,
            metrics=_merge(manifest.metrics, metrics),
            calibration=_merge(manifest.calibration, calibration),
            serving=_merge(manifest.serving, serving),
            extra={**manifest.extra, "parent": source.ref, "history": history},
        )
        return registry.publish(bundle, alias=alias)
