"""ONNX export with a dynamic batch axis, and the parity gate against torch.

`export_onnx` uses torch's default (dynamo) exporter, which needs `onnxscript`, and falls back
to the legacy TorchScript exporter only when that fails; the result says which one ran so the
manifest can record it. `check_parity` runs the torch model and ONNX Runtime on the same inputs
and raises `ParityError` naming the output and the worst difference when they disagree.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from strato import ConfigError, ExportError, ParityError

from strato_training.evaluate import predict_onnx, predict_torch

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

    from torch import nn

__all__ = [
    "EXPORT_INFO",
    "ONNX_MODEL",
    "ExportConfig",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "quiet_exporter",
    "strip_exporter_metadata",
]

ONNX_MODEL = "model.onnx"
EXPORT_INFO = "export.json"
_EXPORTERS = ("auto", "dynamo", "legacy")


@dataclass(frozen=True)
class ExportConfig:
    """`exporter`: auto (dynamo, then legacy if it fails) | dynamo | legacy."""

    opset: int = 18
    exporter: str = "auto"
    input_name: str = "input"
    output_name: str = "logits"

    def __post_init__(self) -> None:
        if self.exporter not in _EXPORTERS:
            raise ConfigError(f"exporter must be one of {_EXPORTERS}, got {self.exporter!r}")
        if not 13 <= self.opset <= 23:
            raise ConfigError(f"opset must be between 13 and 23, got {self.opset}")
        if not self.input_name or not self.output_name:
            raise ConfigError("input_name and output_name must not be empty")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str
    opset: int
    input_name: str
    output_name: str
    size: int
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["path"] = str(self.path)
        return raw


@dataclass(frozen=True)
class ParityReport:
    """torch vs ONNX Runtime on the same inputs."""

    output: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float
    min_top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...],
    config: ExportConfig | None = None,
) -> ExportResult:
    """Export `model` to one self-contained ONNX file whose axis 0 (batch) is dynamic."""
    config = config or ExportConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = torch.rand(2, *input_shape)
    fallback: str | None = None
    exporter = "legacy" if config.exporter == "legacy" else "dynamo"
    if exporter == "dynamo":
        try:
            _torch_export(model, example, path, config, dynamo=True)
        except Exception as exc:  # the dynamo exporter fails in many ways (trace, onnxscript, ...)
            if config.exporter == "dynamo":
                raise ExportError(f"the dynamo ONNX exporter failed: {exc}") from exc
            fallback, exporter = f"{type(exc).__name__}: {exc}"[:500], "legacy"
    if exporter == "legacy":
        try:
            _torch_export(model, example, path, config, dynamo=False)
        except Exception as exc:
            raise ExportError(f"the legacy ONNX exporter failed: {exc}") from exc
    _check_graph(path, config)
    _check_batch_axis(path, input_shape)
    return ExportResult(
        path=path,
        exporter=exporter,
        opset=_opset_of(path),
        input_name=config.input_name,
        output_name=config.output_name,
        size=path.stat().st_size,
        fallback_reason=fallback,
    )


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Exporter logs and warnings off; anything it prints goes to stderr."""
    # The exporter logs every torchvision op it skips and warns about its own deprecations.
    for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Whatever it still prints goes to stderr, so `--json` output on stdout stays parseable.
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def _torch_export(
    model: nn.Module, example: torch.Tensor, path: Path, config: ExportConfig, *, dynamo: bool
) -> None:
    # Each exporter spells the dynamic batch axis its own way.
    batch_axis: dict[str, Any] = (
        {"dynamic_shapes": ({0: torch.export.Dim("batch")},), "external_data": False}
        if dynamo
        else {"dynamic_axes": {config.input_name: {0: "batch"}, config.output_name: {0: "batch"}}}
    )
    with quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[config.input_name],
            output_names=[config.output_name],
            opset_version=config.opset,
            dynamo=dynamo,
            verbose=False,
            **batch_axis,
        )
    # Same bytes wherever strato is installed: the exporter's stack traces name source paths.
    _strip_metadata_in_place(path)


def strip_exporter_metadata(graph: Any) -> None:
    """Drop the dynamo exporter's per-node debug metadata (`pkg.torch.onnx.stack_trace`,
    class hierarchy, FX node, namespace): source paths and lines of the user's machine that
    every device would download, several times the weights of a small model."""
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                strip_exporter_metadata(attribute.g)
            for sub in attribute.graphs:
                strip_exporter_metadata(sub)


def _strip_metadata_in_place(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    strip_exporter_metadata(model.graph)
    onnx.save_model(model, str(path))


def _check_graph(path: Path, config: ExportConfig) -> None:
    """The file is valid ONNX, self-contained, named as asked, with a symbolic batch axis."""
    import onnx

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path} is not valid ONNX: {exc}") from exc
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs[:1] != [config.input_name] or outputs[:1] != [config.output_name]:
        raise ExportError(
            f"exported graph has inputs {inputs} and outputs {outputs}; expected "
            f"{config.input_name!r} and {config.output_name!r}"
        )
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value"):
        raise ExportError(
            f"exported input {config.input_name!r} has a fixed batch size {batch.dim_value}"
        )


def _check_batch_axis(path: Path, input_shape: tuple[int, ...]) -> None:
    """Run the graph at batch 1 and 3: a symbolic axis alone does not prove the graph is free
    of shapes the tracer baked in (a reshape to the example's batch size, say)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, *input_shape), dtype=np.float32)
        try:
            output = session.run(None, {name: x})[0]
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            raise ExportError(
                f"{path.name} does not run at batch size {batch}: the export fixed a shape "
                f"the batch axis depends on ({exc})"
            ) from exc
        if output.shape[0] != batch:
            raise ExportError(
                f"{path.name} returns {output.shape[0]} rows for a batch of {batch}: the "
                "export fixed the batch size"
            )


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    x: np.ndarray[Any, Any],
    *,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    output: str = "logits",
) -> ParityReport:
    """Compare torch and ONNX Runtime outputs on `x`; `ParityError` when over tolerance."""
    if atol < 0 or not 0 <= min_top1_agreement <= 1:
        raise ConfigError(
            f"atol must be >= 0 and min_top1_agreement in [0, 1], got {atol}, {min_top1_agreement}"
        )
    if len(x) == 0:
        raise ConfigError("parity needs at least one sample")
    expected = predict_torch(model, x)
    actual = predict_onnx(onnx_path, x)
    if expected.shape != actual.shape:
        raise ParityError(
            f"output {output!r}: ONNX Runtime returned shape {actual.shape}, torch {expected.shape}",
            output=output,
            max_abs_diff=float("inf"),
        )
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    report = ParityReport(
        output=output,
        samples=len(x),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float((expected.argmax(1) == actual.argmax(1)).mean()),
        atol=atol,
        min_top1_agreement=min_top1_agreement,
    )
    if report.max_abs_diff > atol or report.top1_agreement < min_top1_agreement:
        row, column = np.unravel_index(int(diff.argmax()), diff.shape)
        raise ParityError(
            f"output {output!r}: ONNX Runtime differs from torch by up to "
            f"{report.max_abs_diff:.3g} (sample {row}, index {column}; atol {atol:g}); "
            f"top-1 agreement {report.top1_agreement:.4f} (minimum {min_top1_agreement:g})",
            output=output,
            max_abs_diff=report.max_abs_diff,
        )
    return report


def write_export_info(
    run_dir: str | os.PathLike[str],
    result: ExportResult,
    parity: ParityReport,
    *,
    onnx_eval: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record the exporter, opset, parity and the ONNX model's scores for `publish` (`extra`:
    the wire signature and recipe when preprocessing was baked in)."""
    info = {
        "onnx": result.to_dict() | {"path": result.path.name},
        "parity": parity.to_dict(),
        "onnx_eval": onnx_eval or {},
        "framework": framework_versions(result.exporter),
        **(extra or {}),
    }
    target = Path(run_dir) / EXPORT_INFO
    target.write_text(json.dumps(info, indent=2) + "\n")
    return target


def framework_versions(exporter: str) -> dict[str, str]:
    """Versions that produced an artifact, for the manifest's `framework`."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"torch": torch.__version__, "exporter": exporter}
    for package in ("onnx", "onnxruntime", "onnxscript", "strato"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions
