"""The confidence cascade's arithmetic: calibrated confidence per row, which rows go to the
cloud, and merging the cloud's rows back into the edge's answer. No I/O: both routers use it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from strato._messages import InferRequest, InferResponse

if TYPE_CHECKING:
    from strato._routing import ModelInfo
    from strato.policies import Cascade

__all__ = ["cascade_reason", "confidence_rows", "merge_rows", "rows_of", "softmax"]


def softmax(logits: np.ndarray[Any, Any], temperature: float = 1.0) -> np.ndarray[Any, Any]:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def confidence_rows(
    response: InferResponse, policy: Cascade, info: ModelInfo
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
    """(calibrated top probability per row, indices of rows under the threshold, threshold)."""
    threshold = policy.threshold if policy.threshold is not None else info.threshold
    if threshold is None:
        threshold = 0.8
    temperature = policy.temperature or info.temperature
    logits = (
        response.outputs[policy.output] if policy.output else next(iter(response.outputs.values()))
    )
    confidence = softmax(logits.reshape(len(logits), -1), temperature).max(axis=-1)
    return confidence, np.flatnonzero(confidence < threshold), threshold


def rows_of(request: InferRequest, rows: np.ndarray[Any, Any]) -> InferRequest:
    inputs = {name: np.ascontiguousarray(array[rows]) for name, array in request.inputs.items()}
    return InferRequest(request.model, inputs, request.version, request.id, request.outputs)


def merge_rows(
    edge: InferResponse, cloud: InferResponse, rows: np.ndarray[Any, Any]
) -> InferResponse:
    """The edge's answer with `rows` replaced by the cloud's."""
    outputs = {}
    for name, array in edge.outputs.items():
        merged = np.array(array, copy=True)
        merged[rows] = cloud.outputs[name]
        outputs[name] = merged
    return InferResponse(
        outputs,
        edge.model_name,
        edge.model_version,
        edge.id,
        f"{edge.served_by}+{cloud.served_by}",
        edge.precision,
    )


def cascade_reason(
    confidence: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], threshold: float
) -> str:
    if len(confidence) == 1:
        sign = "<" if len(rows) else "≥"
        return f"cascade p={confidence[0]:.2f}{sign}{threshold:.2f}"
    return f"cascade {len(rows)}/{len(confidence)} rows p<{threshold:.2f}"
