"""The confidence cascade's arithmetic: which settings apply to a model (checked once, at its
first call), the confidence per row, which rows go to the cloud, and merging the cloud's rows
back into the edge's answer. No I/O and no routing state: the routing core calls it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._errors import ConfigError
from strato._inference import InferRequest, InferResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from strato.policies import Cascade

__all__ = [
    "CascadeSettings",
    "cascade_reason",
    "cascade_settings",
    "confidence_rows",
    "merge_rows",
    "rows_of",
    "softmax",
]

CALIBRATE_HINT = (
    "calibrate it (`strato calibrate NAME:VERSION`, which records calibration.cascade_threshold "
    "in the manifest) or pass Cascade(threshold=...)"
)


def softmax(logits: np.ndarray[Any, Any], temperature: float = 1.0) -> np.ndarray[Any, Any]:
    """Row-wise softmax of `logits / temperature`, in float64 (stable: the max is subtracted)."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    """What a `Cascade` means for one model: the threshold and where it came from (`argument`,
    `manifest` or `default`), and how a row's confidence is computed."""

    threshold: float
    source: str
    temperature: float = 1.0
    output: str | None = None
    confidence: Callable[[dict[str, np.ndarray[Any, Any]]], Any] | None = None


def cascade_settings(
    policy: Cascade,
    model: str,
    *,
    task: str | None,
    outputs: Mapping[str, tuple[int, ...]],
    threshold: float | None,
    temperature: float,
    threshold_status: str | None = None,
) -> CascadeSettings:
    """Check `policy` against the model's metadata (`task`, output shapes, calibration).

    A classifier's confidence is its calibrated top probability; any other task needs
    `Cascade(confidence=fn)`. An uncalibrated classifier needs a threshold argument: there is no
    silent default for probabilities.
    """
    if policy.confidence is not None:
        if policy.threshold is not None:
            return CascadeSettings(policy.threshold, "argument", confidence=policy.confidence)
        return CascadeSettings(policy.default_threshold, "default", confidence=policy.confidence)
    if task is not None and task != "classification":
        raise ConfigError(
            f"Cascade: {model}'s task is {task!r}, not a classifier; its outputs carry no class "
            "probabilities. Pass Cascade(confidence=fn), fn(outputs) -> confidence per row"
        )
    output = _logits_output(policy, model, outputs)
    temperature = policy.temperature or temperature
    if policy.threshold is not None:
        return CascadeSettings(policy.threshold, "argument", temperature, output)
    if threshold is not None:
        return CascadeSettings(threshold, "manifest", temperature, output)
    if threshold_status == "unreachable":
        raise ConfigError(
            f"Cascade: {model} is calibrated, but no confidence threshold reaches the target "
            "precision on its validation split (calibration.threshold_status 'unreachable'); "
            "pass Cascade(threshold=...) knowing what it costs, or recalibrate with a lower "
            "--target-precision"
        )
    raise ConfigError(f"Cascade: {model} has no calibrated cascade threshold; {CALIBRATE_HINT}")


def _logits_output(
    policy: Cascade, model: str, outputs: Mapping[str, tuple[int, ...]]
) -> str | None:
    if not outputs:  # a server that sends no signature: checked on the answer instead
        return policy.output
    name = policy.output or next(iter(outputs))
    if name not in outputs:
        raise ConfigError(
            f"Cascade: {model} has no output {name!r}; its outputs are {sorted(outputs)}"
        )
    shape = outputs[name]
    if len(shape) < 2 or shape[-1] == 1:
        raise ConfigError(
            f"Cascade: output {name!r} of {model} has shape {list(shape)}: one column is no "
            "class distribution (its softmax is always 1). Pass Cascade(confidence=fn)"
        )
    return name


def confidence_rows(
    response: InferResponse, settings: CascadeSettings
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(confidence per row, indices of the rows under the threshold)."""
    if settings.confidence is not None:
        confidence = np.asarray(settings.confidence(response.outputs), dtype=np.float64)
        rows = len(next(iter(response.outputs.values())))
        if confidence.shape != (rows,):
            raise ConfigError(
                f"Cascade confidence= returned shape {list(confidence.shape)} for {rows} rows; "
                "it must return one number per row"
            )
    else:
        name = settings.output or next(iter(response.outputs))
        logits = response.outputs.get(name)
        if logits is None:
            raise ConfigError(f"Cascade: the answer has no output {name!r}")
        if logits.ndim < 2 or logits.shape[-1] < 2:
            raise ConfigError(
                f"Cascade: output {name!r} has shape {list(logits.shape)}, no class distribution"
            )
        confidence = softmax(logits.reshape(len(logits), -1), settings.temperature).max(axis=-1)
    return confidence, np.flatnonzero(confidence < settings.threshold)


def rows_of(request: InferRequest, rows: np.ndarray[Any, Any]) -> InferRequest:
    """The same request with only `rows` (axis 0) of every input."""
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
    confidence: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], settings: CascadeSettings
) -> str:
    """`cascade p=0.62<0.80 (manifest)` for one row, `cascade 3/8 rows p<0.80 (argument)`."""
    threshold, source = settings.threshold, settings.source
    if len(confidence) == 1:
        sign = "<" if len(rows) else "≥"
        return f"cascade p={confidence[0]:.2f}{sign}{threshold:.2f} ({source})"
    return f"cascade {len(rows)}/{len(confidence)} rows p<{threshold:.2f} ({source})"
