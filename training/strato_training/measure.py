"""Run and time ONNX artifacts on the ONNX Runtime CPU provider, with named inputs.

`run_outputs` gives every output of a model for a dict of named input arrays (in batches);
`measure_latency` times several artifacts on the same feed, rounds interleaved so background
load hits each alike; `pick_default` names the fastest artifact that passed its gate and beats
fp32 by a clear margin (never one slower than fp32).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, ExportError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = [
    "SPEEDUP_MARGIN",
    "Feeds",
    "as_feeds",
    "batch_feed",
    "measure_latency",
    "ort_session",
    "pick_default",
    "predict_logits",
    "rows_of",
    "run_outputs",
    "take_rows",
]

Feeds = dict[str, np.ndarray[Any, Any]]
# Switching the default away from fp32 needs a clear win, not measurement noise.
SPEEDUP_MARGIN = 0.05

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def ort_session(path: Path | str, threads: int | None = None, *, spin: bool = True) -> Any:
    """A CPU `InferenceSession` with all graph optimizations; `ExportError` if it cannot load.
    `spin=False` stops its threads busy-waiting after a run (see `measure_latency`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's exception types are not importable lazily
        raise ExportError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def as_feeds(session: Any, inputs: np.ndarray[Any, Any] | Mapping[str, Any]) -> Feeds:
    """Named arrays for every input of `session`, cast to the graph's dtypes. A bare array is
    the model's only input; a mapping must name every input (extra names are refused)."""
    specs = session.get_inputs()
    names = [spec.name for spec in specs]
    if isinstance(inputs, np.ndarray):
        if len(names) != 1:
            raise ConfigError(f"the model has inputs {names}: pass one named array per input")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise ConfigError(
            f"data must name the model's inputs {names}; missing {missing}, unknown {extra}"
        )
    feeds: Feeds = {}
    for spec in specs:
        array = np.asarray(inputs[spec.name])
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None:
            raise ConfigError(f"input {spec.name!r} has an unsupported type {spec.type}")
        if array.dtype.kind == "f" and np.dtype(dtype).kind in "biu":
            raise ConfigError(
                f"input {spec.name!r} is {spec.type} in the model but the data is {array.dtype}"
            )
        feeds[spec.name] = np.ascontiguousarray(array, dtype=dtype)
    rows_of(feeds)
    return feeds


def rows_of(feeds: Mapping[str, np.ndarray[Any, Any]]) -> int:
    """The shared number of rows (first axis) of `feeds`; `ConfigError` if they disagree."""
    counts = {name: len(array) for name, array in feeds.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"every input needs the same number of rows, got {counts}")
    if not counts or next(iter(counts.values())) == 0:
        raise ConfigError("no rows to run")
    return next(iter(counts.values()))


def take_rows(feeds: Mapping[str, np.ndarray[Any, Any]], rows: Any) -> Feeds:
    """The same rows (indices or a slice) of every input."""
    return {name: np.ascontiguousarray(array[rows]) for name, array in feeds.items()}


def run_outputs(
    path: Path | str, inputs: np.ndarray[Any, Any] | Mapping[str, Any], *, batch: int = 256
) -> Feeds:
    """Every output of the model for `inputs`, run in batches of `batch` rows."""
    session = ort_session(path)
    feeds = as_feeds(session, inputs)
    names = [o.name for o in session.get_outputs()]
    total = rows_of(feeds)
    chunks: list[list[np.ndarray[Any, Any]]] = [[] for _ in names]
    for start in range(0, total, batch):
        try:
            found = session.run(names, take_rows(feeds, slice(start, start + batch)))
        except Exception as exc:
            raise ExportError(f"ONNX Runtime failed running {path}: {exc}") from exc
        for chunk, value in zip(chunks, found, strict=True):
            chunk.append(np.asarray(value))
    return {name: np.concatenate(chunk) for name, chunk in zip(names, chunks, strict=True)}


def predict_logits(
    path: Path | str, x: np.ndarray[Any, Any] | Mapping[str, Any], *, batch: int = 256
) -> np.ndarray[Any, Any]:
    """The model's first output for `x` (an array for a one-input model, or named arrays)."""
    first = next(iter(run_outputs(path, x, batch=batch).values()))
    return first.astype(np.float32)


def batch_feed(feeds: Mapping[str, np.ndarray[Any, Any]], batch: int) -> Feeds:
    """`batch` rows of every input, repeating the rows when there are fewer."""
    total = rows_of(feeds)
    pick = np.arange(batch) % total
    return take_rows(feeds, pick)


def measure_latency(
    paths: Sequence[Path],
    x: np.ndarray[Any, Any] | Mapping[str, Any],
    *,
    batch: int = 32,
    rounds: int = 60,
    budget_s: float = 3.0,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """p50/p99 milliseconds of one `run` per model at `batch`, rounds interleaved across models
    so background load hits every model alike. Stops early after `budget_s` seconds.
    Threads do not spin between runs: a session's spinning pool would steal the cores of the
    next model timed and skew the comparison."""
    sessions = [ort_session(p, threads, spin=False) for p in paths]
    feed = batch_feed(as_feeds(sessions[0], x), batch)
    for path, session in zip(paths, sessions, strict=True):
        try:
            session.run(None, feed)  # warm-up: first run allocates
        except Exception as exc:  # ORT's exception types are not importable lazily
            raise ExportError(f"{path} cannot run a batch of {batch}: {exc}") from exc
    timings: list[list[float]] = [[] for _ in sessions]
    deadline = time.perf_counter() + budget_s
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
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
