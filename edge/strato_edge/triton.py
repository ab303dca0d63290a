"""Triton's tooling extensions, in Triton's JSON shapes: model configuration and statistics.

`GET /v2/models/{m}/config` and gRPC `ModelConfig` answer a Triton-style model config (inputs,
outputs, max batch size, dynamic batching, instance group) so perf_analyzer-style tools and
dashboards work; `GET /v2/models[/{m}]/stats` and gRPC `ModelStatistics` answer inference and
queue counts and durations, per model version, as Triton's statistics extension does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strato_edge.config import BatchingConfig
    from strato_edge.device_store import ModelStore, ServedModel
    from strato_edge.metrics import InferStats, Metrics

__all__ = ["PLATFORMS", "model_config", "model_statistics", "triton_stats"]

# Triton's `platform` names for what really runs the model.
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}


def _dims(spec: dict[str, Any], batched: bool) -> list[int]:
    shape = [d if isinstance(d, int) else -1 for d in spec["shape"]]
    return shape[1:] if batched else shape  # Triton leaves the batch axis out of `dims`


def model_config(served: ServedModel, batching: BatchingConfig) -> dict[str, Any]:
    """The Triton model configuration (protobuf JSON mapping of `ModelConfig`) of a model."""
    meta = served.metadata
    batched = served.batcher.batching
    engine = served.engine
    gpu = any("CUDA" in p or "Tensorrt" in p for p in engine.providers) or engine.kind == "tensorrt"
    config: dict[str, Any] = {
        "name": served.name,
        "platform": PLATFORMS.get(engine.kind, engine.kind),
        "backend": "onnxruntime" if engine.kind == "onnxruntime" else engine.kind,
        "version_policy": {"specific": {"versions": [served.version]}}
        if served.version.isdigit()
        else {"latest": {"num_versions": 1}},
        "max_batch_size": batching.max_batch_size if batched else 0,
        "input": [
            {
                "name": s["name"],
                "data_type": f"TYPE_{_type(s['datatype'])}",
                "dims": _dims(s, batched),
            }
            for s in meta["inputs"]
        ],
        "output": [
            {
                "name": s["name"],
                "data_type": f"TYPE_{_type(s['datatype'])}",
                "dims": _dims(s, batched),
            }
            for s in meta["outputs"]
        ],
        "instance_group": [
            {
                "name": f"{served.name}_0",
                "count": batching.instances,
                "kind": "KIND_GPU" if gpu else "KIND_CPU",
            }
        ],
        "parameters": {
            "precision": {"string_value": served.precision},
            "strato_version": {"string_value": served.version},
        },
    }
    if batched:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": str(batching.max_queue_delay_us),
            "preferred_batch_size": [batching.max_batch_size],
        }
    return config


def _type(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype


def _duration(count: int, seconds: float) -> dict[str, str]:
    # protobuf JSON mapping: uint64 fields are strings
    return {"count": str(count), "ns": str(int(seconds * 1e9))}


def triton_stats(name: str, version: str, stats: InferStats) -> dict[str, Any]:
    """One `ModelStatistics` entry (protobuf JSON mapping)."""
    return {
        "name": name,
        "version": version,
        "last_inference": str(stats.last_inference_ms),
        "inference_count": str(stats.inference_count),
        "execution_count": str(stats.execution_count),
        "inference_stats": {
            "success": _duration(stats.success, stats.success_s),
            "fail": _duration(stats.fail, stats.fail_s),
            "queue": _duration(stats.queued, stats.queue_s),
            "compute_input": _duration(stats.execution_count, 0.0),
            "compute_infer": _duration(stats.execution_count, stats.compute_s),
            "compute_output": _duration(stats.execution_count, 0.0),
            "cache_hit": _duration(0, 0.0),
            "cache_miss": _duration(0, 0.0),
        },
        "batch_stats": [
            {
                "batch_size": str(size),
                "compute_input": _duration(count, 0.0),
                "compute_infer": _duration(count, seconds),
                "compute_output": _duration(count, 0.0),
            }
            for size, (count, seconds) in sorted(stats.batches.items())
        ],
    }


def model_statistics(
    store: ModelStore, metrics: Metrics, name: str | None, version: str | None
) -> dict[str, Any]:
    """`{"model_stats": [...]}` for one model (its served version unless `version`) or all."""
    served = store.served()
    keys = sorted(served.items()) if name is None else [(name, version or served.get(name, ""))]
    entries = []
    for model, model_version in keys:
        stats = metrics.stats_for(model, model_version)
        entries.append(triton_stats(model, model_version, stats))
    return {"model_stats": entries}
