"""INT8 and FP16 artifacts from an fp32 ONNX model, gated on accuracy and measured for speed.

Modes:
- ``int8-static``: ONNX Runtime static quantization, a calibration reader over N training
  samples, per-channel weights. Two artifacts: QDQ with symmetric int8 activations and weights
  (TensorRT's explicit quantization) and QOperator (fastest ONNX Runtime CPU kernels).
- ``int8-dynamic``: weights int8, activations quantized at run time (MatMul/Gemm models only:
  ConvInteger is 6-9x slower than fp32 on CPU, so a conv model never serves it by default).
- ``fp16``: float16 weights, float32 inputs and outputs kept (for GPUs; no speed-up on CPU).

Every artifact is evaluated on the test split (accuracy, top-1 agreement with fp32, size) and
refused with `QuantizationError` when it loses more than `max_drop` accuracy points, unless
`force`. `measure_latency` times fp32 and every artifact on this machine, interleaved, and
`pick_default` names the fastest accurate one, never one slower than fp32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, ExportError, QuantizationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

__all__ = [
    "MODES",
    "QuantizedArtifact",
    "convert_fp16",
    "evaluate_artifact",
    "measure_latency",
    "pick_default",
    "predict_logits",
    "quantize",
    "quantize_int8_dynamic",
    "quantize_int8_static",
    "strip_debug_info",
]

MODES = ("int8-static", "int8-dynamic", "fp16")
# Switching the default away from fp32 needs a clear win, not measurement noise.
SPEEDUP_MARGIN = 0.05


@dataclass(frozen=True)
class QuantizedArtifact:
    """One produced file: `path` is relative to the output folder (and then to the bundle)."""

    path: str
    precision: str
    format: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def artifact_spec(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": "onnx",
            "precision": self.precision,
            "format": self.format,
        }


def _ort_session(path: Path | str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's exception types are not importable lazily
        raise ExportError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def predict_logits(
    path: Path | str, x: np.ndarray[Any, Any], *, batch: int = 256
) -> np.ndarray[Any, Any]:
    """The model's first output for `x`, in batches, on the ONNX Runtime CPU provider."""
    session = _ort_session(path)
    name = session.get_inputs()[0].name
    chunks = [
        session.run(None, {name: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(chunks).astype(np.float32)


class _SampleReader:
    """ORT's CalibrationDataReader protocol over an array: a few samples per `get_next()`."""

    def __init__(self, input_name: str, samples: np.ndarray[Any, Any], batch: int = 32) -> None:
        self._batches: Iterator[dict[str, np.ndarray[Any, Any]]] = iter(
            {input_name: np.ascontiguousarray(samples[i : i + batch], dtype=np.float32)}
            for i in range(0, len(samples), batch)
        )

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        raise NotImplementedError


def calibration_samples(
    x: np.ndarray[Any, Any], samples: int, seed: int = 0
) -> np.ndarray[Any, Any]:
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    pick = np.random.default_rng(seed).permutation(len(x))[:samples]
    return np.asarray(x[np.sort(pick)], dtype=np.float32)


def _preprocessed(fp32_path: Path, workdir: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + graph folding) before static quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / f".{fp32_path.stem}.pre.onnx"
    if not out.exists():
        try:
            quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=False)
        except Exception:  # a graph the pre-pass cannot handle still quantizes without it
            return fp32_path
    return out


def quantize_int8_static(
    fp32_path: Path, out_path: Path, samples: np.ndarray[Any, Any], *, fmt: str = "qdq"
) -> Path:
    """Static int8: `qdq` (symmetric int8 activations, TensorRT) or `qoperator` (ORT CPU)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if fmt not in ("qdq", "qoperator"):
        raise ConfigError(f"int8 format must be 'qdq' or 'qoperator', got {fmt!r}")
    source = _preprocessed(fp32_path, out_path.parent)
    input_name = _ort_session(source).get_inputs()[0].name
    qdq = fmt == "qdq"
    try:
        quantize_static(
            str(source),
            str(out_path),
            _SampleReader(input_name, samples),
            quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # TensorRT dequantizes int8 weights but not int32 biases: QDQ keeps biases float.
            extra_options={
                "ActivationSymmetric": qdq,
                "WeightSymmetric": True,
                "QuantizeBias": not qdq,
            },
        )
    except Exception as exc:
        raise ExportError(f"static int8 ({fmt}) quantization of {fp32_path} failed: {exc}") from exc
    return out_path


def quantize_int8_dynamic(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        source = _preprocessed(fp32_path, out_path.parent)
        quantize_dynamic(str(source), str(out_path), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"dynamic int8 quantization of {fp32_path} failed: {exc}") from exc
    return out_path


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """float16 weights and compute, float32 inputs and outputs (Cast nodes at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
    except Exception as exc:
        raise ExportError(f"fp16 conversion of {fp32_path} failed: {exc}") from exc
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


def quantize(
    fp32_path: Path,
    out_dir: Path,
    mode: str,
    *,
    calibration_x: np.ndarray[Any, Any] | None = None,
    samples: int = 256,
    stem: str = "model",
) -> list[QuantizedArtifact]:
    """Write the artifacts of `mode` into `out_dir` (no gate yet; see `evaluate_artifact`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "int8-static":
        if calibration_x is None:
            raise ConfigError("int8-static needs calibration samples (the training split)")
        chosen = calibration_samples(calibration_x, samples)
        made = []
        for fmt in ("qoperator", "qdq"):
            path = f"{stem}.int8.{fmt}.onnx"
            quantize_int8_static(fp32_path, out_dir / path, chosen, fmt=fmt)
            strip_debug_info(out_dir / path)
            made.append(QuantizedArtifact(path, "int8", fmt))
        return made
    if mode == "int8-dynamic":
        path = f"{stem}.int8.dynamic.onnx"
        quantize_int8_dynamic(fp32_path, out_dir / path)
        strip_debug_info(out_dir / path)
        return [QuantizedArtifact(path, "int8", "dynamic")]
    if mode == "fp16":
        path = f"{stem}.fp16.onnx"
        convert_fp16(fp32_path, out_dir / path)
        strip_debug_info(out_dir / path)
        return [QuantizedArtifact(path, "fp16", "fp16")]
    raise ConfigError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")


def evaluate_artifact(
    path: Path,
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    reference_logits: np.ndarray[Any, Any],
    reference_size: int,
) -> dict[str, Any]:
    """Test-split accuracy, top-1 agreement with fp32 and size of one artifact."""
    logits = predict_logits(path, x)
    top1 = logits.argmax(axis=1)
    reference_accuracy = float((reference_logits.argmax(axis=1) == y).mean())
    accuracy = float((top1 == y).mean())
    size = path.stat().st_size
    return {
        "accuracy": round(accuracy, 6),
        "agreement": round(float((top1 == reference_logits.argmax(axis=1)).mean()), 6),
        "accuracy_drop_points": round((reference_accuracy - accuracy) * 100, 4),
        "size": size,
        "size_ratio": round(size / reference_size, 4),
        "test_samples": len(y),
    }


def gate(metrics: dict[str, dict[str, Any]], *, max_drop: float, force: bool) -> None:
    """Mark each artifact `gate: passed|failed`; `QuantizationError` on a failure unless `force`."""
    failed = []
    for path, found in metrics.items():
        found["gate"] = "passed" if found["accuracy_drop_points"] <= max_drop else "failed"
        if found["gate"] == "failed":
            failed.append(f"{path} loses {found['accuracy_drop_points']:.2f} points")
    if failed and not force:
        raise QuantizationError(
            f"accuracy gate (max drop {max_drop} points) refused: "
            + "; ".join(failed)
            + " (use --force to publish anyway)"
        )


def measure_latency(
    paths: Sequence[Path],
    x: np.ndarray[Any, Any],
    *,
    batch: int = 32,
    rounds: int = 60,
    budget_s: float = 3.0,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """p50/p99 milliseconds of one `run` per model at `batch`, rounds interleaved across models
    so background load hits every model alike. Stops early after `budget_s` seconds."""
    sessions = [_ort_session(p, threads) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    reps = -(-batch // len(x))
    feed = np.ascontiguousarray(np.concatenate([x] * reps)[:batch], dtype=np.float32)
    for session, name in zip(sessions, names, strict=True):
        session.run(None, {name: feed})  # warm-up: first run allocates
    timings: list[list[float]] = [[] for _ in sessions]
    deadline = time.perf_counter() + budget_s
    for _ in range(rounds):
        for i, (session, name) in enumerate(zip(sessions, names, strict=True)):
            start = time.perf_counter()
            session.run(None, {name: feed})
            timings[i].append((time.perf_counter() - start) * 1e3)
        if time.perf_counter() > deadline and len(timings[0]) >= 5:
            break
    return {
        str(p): {
            "p50_ms": round(float(np.percentile(t, 50)), 4),
            "p99_ms": round(float(np.percentile(t, 99)), 4),
            "batch": batch,
        }
        for p, t in zip(paths, timings, strict=True)
    }


def pick_default(
    fp32_path: str,
    latency: dict[str, dict[str, float]],
    metrics: dict[str, dict[str, Any]],
    *,
    margin: float = SPEEDUP_MARGIN,
) -> tuple[str, str]:
    """(artifact path, reason): the fastest artifact that passed the gate and beats fp32 by
    more than `margin`; fp32 otherwise. Never an artifact slower than fp32."""
    base = latency[fp32_path]["p50_ms"]
    best, best_ms = fp32_path, base
    for path, timing in latency.items():
        passed = metrics.get(path, {}).get("gate") == "passed"
        if passed and timing["p50_ms"] < base * (1 - margin) and timing["p50_ms"] < best_ms:
            best, best_ms = path, timing["p50_ms"]
    if best == fp32_path:
        return best, f"no gated artifact beats fp32 ({base:.3f} ms) by more than {margin:.0%}"
    return best, f"{best_ms:.3f} ms vs fp32 {base:.3f} ms at batch {latency[best]['batch']:.0f}"
