"""INT8 and FP16 artifacts from an fp32 ONNX model: the recipes, and which ones fit a graph.

Recipes (`RECIPES`, each one artifact):
- ``dynamic``: ONNX Runtime dynamic quantization of MatMul/Gemm with constant weights, int8
  per-channel weights, activations quantized at run time. What transformer encoders need
  (static recipes turn a sentence encoder into noise); never Conv (ConvInteger is 6-9x slower
  than fp32 on CPU).
- ``qoperator``: static quantization, uint8 activations, int8 per-channel weights, ORT's fastest
  CPU kernels (QLinearConv, QGemm). What conv nets serve on CPU.
- ``qdq``: static QDQ with symmetric int8 activations and weights, float biases: TensorRT's
  explicit quantization, so it is always produced for the TensorRT path.
- ``fp16``: float16 weights, float32 inputs and outputs kept (for GPUs; no speed-up on CPU).

Modes group recipes: ``int8-static`` = qoperator + qdq, ``int8-dynamic`` = dynamic, ``fp16``,
and ``auto``: qoperator + qdq for a graph with convolutions, dynamic + qdq otherwise.

ONNX Runtime's tools write temporary files into the working directory on failure
(``sym_shape_infer_temp.onnx`` and a model-sized ``<uuid>.data``), so they run inside a private
temporary folder; a symbolic-shape-inference failure is reported in `QuantizedArtifact.notes`.
Every failure is a `strato.QuantizationError` naming the recipe and, when ORT says so, the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError

from strato_training.measure import (
    Feeds,
    as_feeds,
    measure_latency,
    ort_session,
    pick_default,
    predict_logits,
    rows_of,
    run_outputs,
    take_rows,
)
from strato_training.ort_tools import failure, preprocessed, private_cwd

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "MODES",
    "RECIPES",
    "QuantizedArtifact",
    "Recipe",
    "auto_recipes",
    "build_recipe",
    "calibration_samples",
    "convert_fp16",
    "measure_latency",
    "pick_default",
    "predict_logits",
    "preprocessed",
    "quantizable_nodes",
    "quantize",
    "quantize_int8_dynamic",
    "quantize_int8_static",
    "recipes_for",
    "run_outputs",
    "strip_debug_info",
]

MODES = ("auto", "int8-static", "int8-dynamic", "fp16")


@dataclass(frozen=True)
class Recipe:
    """One way to make one artifact. `op_types`: the ops whose layers the recipe quantizes (the
    candidates of a per-layer search)."""

    name: str
    precision: str
    format: str
    op_types: tuple[str, ...]
    needs_calibration: bool

    def path(self, stem: str, *, mixed: bool = False) -> str:
        if self.name == "fp16":
            return f"{stem}.fp16.onnx"
        return f"{stem}.int8.{self.format}{'-mixed' if mixed else ''}.onnx"


RECIPES = {
    "dynamic": Recipe("dynamic", "int8", "dynamic", ("MatMul", "Gemm"), False),
    "qoperator": Recipe("qoperator", "int8", "qoperator", ("Conv", "MatMul", "Gemm"), True),
    "qdq": Recipe("qdq", "int8", "qdq", ("Conv", "MatMul", "Gemm"), True),
    "fp16": Recipe("fp16", "fp16", "fp16", (), False),
}
_MODE_RECIPES = {
    "int8-static": ("qoperator", "qdq"),
    "int8-dynamic": ("dynamic",),
    "fp16": ("fp16",),
}


@dataclass(frozen=True)
class QuantizedArtifact:
    """One produced file: `path` is relative to the output folder (and then to the bundle).
    `fp32_layers` are the layers a per-layer search kept in fp32; `notes` what ORT reported."""

    path: str
    precision: str
    format: str
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""
    fp32_layers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def artifact_spec(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": "onnx",
            "precision": self.precision,
            "format": self.format,
        }


class _SampleReader:
    """ORT's CalibrationDataReader protocol over named arrays: a few rows per `get_next()`."""

    def __init__(self, samples: Feeds, batch: int = 32) -> None:
        total = rows_of(samples)
        self._batches: Iterator[Feeds] = iter(
            take_rows(samples, slice(i, i + batch)) for i in range(0, total, batch)
        )

    def get_next(self) -> Feeds | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        raise NotImplementedError


def calibration_samples(
    x: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]], samples: int, seed: int = 0
) -> Feeds | np.ndarray[Any, Any]:
    """`samples` rows picked at random (same rows of every input), in their original order."""
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    feeds = {"": x} if isinstance(x, np.ndarray) else dict(x)
    total = rows_of(feeds)
    pick = np.sort(np.random.default_rng(seed).permutation(total)[:samples])
    chosen = take_rows(feeds, pick)
    return chosen[""] if isinstance(x, np.ndarray) else chosen


def quantize_int8_static(
    fp32_path: Path,
    out_path: Path,
    samples: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]],
    *,
    fmt: str = "qdq",
    nodes_to_exclude: Sequence[str] = (),
) -> tuple[Path, tuple[str, ...]]:
    """Static int8: `qdq` (symmetric int8 activations, TensorRT) or `qoperator` (ORT CPU).
    Returns the file and ORT's notes."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if fmt not in ("qdq", "qoperator"):
        raise ConfigError(f"int8 format must be 'qdq' or 'qoperator', got {fmt!r}")
    source, notes = preprocessed(fp32_path.resolve(), out_path.parent)
    feeds = as_feeds(ort_session(source), samples)
    qdq = fmt == "qdq"
    with private_cwd():
        try:
            quantize_static(
                str(source),
                str(out_path.resolve()),
                _SampleReader(feeds),
                quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                per_channel=True,
                activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_ort_names(nodes_to_exclude),
                # TensorRT dequantizes int8 weights but not int32 biases: QDQ keeps biases float.
                extra_options={
                    "ActivationSymmetric": qdq,
                    "WeightSymmetric": True,
                    "QuantizeBias": not qdq,
                },
            )
        except Exception as exc:
            raise failure(fmt, fp32_path, exc) from exc
    return out_path, notes


def quantize_int8_dynamic(
    fp32_path: Path, out_path: Path, *, nodes_to_exclude: Sequence[str] = ()
) -> tuple[Path, tuple[str, ...]]:
    """Dynamic int8 of MatMul/Gemm with constant weights, per-channel int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, notes = preprocessed(fp32_path.resolve(), out_path.parent)
    with private_cwd():
        try:
            quantize_dynamic(
                str(source),
                str(out_path.resolve()),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(RECIPES["dynamic"].op_types),
                nodes_to_exclude=_ort_names(nodes_to_exclude),
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as exc:
            raise failure("dynamic", fp32_path, exc) from exc
    return out_path, notes


def _ort_names(layers: Sequence[str]) -> list[str]:
    """Names to exclude: ORT rewrites a Gemm it cannot quantize as `<name>_MatMul` + Add
    before it looks the name up, so a Gemm layer is excluded under both names."""
    return [n for layer in layers for n in (layer, f"{layer}_MatMul")]


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """float16 weights and compute, float32 inputs and outputs (Cast nodes at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = fp32_path.resolve()
    with private_cwd():
        try:
            model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
            onnx.save(model, str(out_path.resolve()))
        except Exception as exc:
            raise failure("fp16", fp32_path, exc) from exc
    return out_path


def strip_debug_info(path: Path) -> None:
    """Drop what only debugging reads (exporter stack traces in node metadata, doc strings,
    intermediate value_info): on a small model it is a third of the file."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    model.graph.doc_string = ""
    onnx.save(model, str(path))


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def auto_recipes(fp32_path: Path) -> tuple[str, ...]:
    """The recipes that fit the graph: static (QOperator + QDQ) for a conv net, dynamic
    MatMul/Gemm + QDQ otherwise (transformers, MLPs). QDQ is always kept for TensorRT."""
    if "Conv" in _op_types(fp32_path):
        return ("qoperator", "qdq")
    return ("dynamic", "qdq")


def recipes_for(mode: str, fp32_path: Path) -> tuple[str, ...]:
    if mode == "auto":
        return auto_recipes(fp32_path)
    if mode not in _MODE_RECIPES:
        raise ConfigError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    return _MODE_RECIPES[mode]


def quantizable_nodes(path: Path, recipe: str) -> list[str]:
    """Names of the layers `recipe` quantizes in the (pre-processed) graph, in graph order:
    nodes of its op types, with a constant weight for the dynamic recipe."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    wanted = RECIPES[recipe].op_types
    found = []
    for node in graph.node:
        if node.op_type not in wanted or not node.name:
            continue
        if recipe == "dynamic" and not any(i in constants for i in node.input[1:2]):
            continue
        found.append(node.name)
    return found


def build_recipe(
    recipe: str,
    fp32_path: Path,
    out_dir: Path,
    *,
    calibration: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]] | None = None,
    stem: str = "model",
    nodes_to_exclude: Sequence[str] = (),
    path: str | None = None,
) -> QuantizedArtifact:
    """Make the one artifact of `recipe` in `out_dir`, layers in `nodes_to_exclude` kept fp32.
    Paths may be relative: ORT's tools run in a scratch folder, so they get absolute ones."""
    fp32_path, out_dir = fp32_path.resolve(), out_dir.resolve()
    spec = RECIPES[recipe]
    relpath = path or spec.path(stem, mixed=bool(nodes_to_exclude))
    target = out_dir / relpath
    notes: tuple[str, ...] = ()
    if recipe == "fp16":
        convert_fp16(fp32_path, target)
    elif recipe == "dynamic":
        _, notes = quantize_int8_dynamic(fp32_path, target, nodes_to_exclude=nodes_to_exclude)
    else:
        if calibration is None:
            raise ConfigError(f"the {recipe} recipe needs calibration samples (--data)")
        _, notes = quantize_int8_static(
            fp32_path, target, calibration, fmt=recipe, nodes_to_exclude=nodes_to_exclude
        )
    strip_debug_info(target)
    return QuantizedArtifact(
        relpath,
        spec.precision,
        spec.format,
        recipe=recipe,
        fp32_layers=tuple(nodes_to_exclude),
        notes=notes,
    )


def quantize(
    fp32_path: Path,
    out_dir: Path,
    mode: str,
    *,
    calibration_x: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]] | None = None,
    samples: int = 256,
    stem: str = "model",
) -> list[QuantizedArtifact]:
    """Write the artifacts of `mode` into `out_dir` (no gate here: see `strato_training.gates`).
    `calibration_x`: an array for a one-input model, or one named array per input."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recipes = recipes_for(mode, fp32_path)
    chosen = None
    if any(RECIPES[r].needs_calibration for r in recipes):
        if calibration_x is None:
            raise ConfigError(f"{mode} needs calibration samples (--data or the training split)")
        chosen = calibration_samples(calibration_x, samples)
    return [build_recipe(r, fp32_path, out_dir, calibration=chosen, stem=stem) for r in recipes]
