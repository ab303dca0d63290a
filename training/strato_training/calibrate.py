"""Calibration: temperature scaling, expected calibration error, the edge/cloud cascade threshold.

`calibrate(val_logits, val_labels)` fits one temperature T on validation logits by minimising the
negative log-likelihood of softmax(logits / T), measures the expected calibration error (ECE)
before and after, and picks the cascade threshold: the lowest calibrated confidence at which the
predictions the edge keeps (confidence >= threshold) reach `target_precision` on validation.
The returned dict is what `manifest.calibration` holds; the SDK's Cascade policy applies
`temperature` to the logits and compares the top probability with `cascade_threshold`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Calibration",
    "calibrate",
    "cascade_threshold",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "softmax",
]

_T_MIN, _T_MAX = 0.05, 20.0


@dataclass(frozen=True)
class Calibration:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    cascade_threshold: float
    target_precision: float
    edge_share: float
    edge_precision: float
    samples: int

    def to_manifest(self) -> dict[str, Any]:
        """Rounded for the manifest (keys the SDK reads: temperature, cascade_threshold)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def softmax(logits: np.ndarray[Any, Any], temperature: float = 1.0) -> np.ndarray[Any, Any]:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def nll(
    logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], temperature: float = 1.0
) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scaled).sum(axis=1))
    return float(np.mean(log_z - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> float:
    """The T in [0.05, 20] minimising validation NLL (bounded 1-D search over log T)."""
    from scipy.optimize import minimize_scalar  # type: ignore[import-untyped]

    labels = np.asarray(labels, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(_T_MIN), np.log(_T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    best = float(np.exp(result.x))
    # Never return a temperature that is worse than doing nothing.
    return best if nll(logits, labels, best) <= nll(logits, labels, 1.0) else 1.0


def expected_calibration_error(
    probs: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], bins: int = 15
) -> float:
    """ECE: the bin-weighted gap between confidence and accuracy over `bins` equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(float(confidence[members].mean()) - float(correct[members].mean()))
            ece += gap * float(members.mean())
    return ece


def cascade_threshold(
    probs: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], target_precision: float = 0.99
) -> tuple[float, float, float]:
    """(threshold, edge_share, edge_precision): the lowest confidence whose kept set reaches
    `target_precision`. When no threshold does, 1.0 with share 0: everything goes to the cloud.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, correct_sorted = confidence[order], correct[order]
    kept = np.arange(1, len(order) + 1)
    precision = np.cumsum(correct_sorted) / kept
    # Only cut between distinct confidences: ties are kept or sent away together.
    last_of_tie = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
    ok = np.flatnonzero(last_of_tie & (precision >= target_precision))
    if ok.size == 0:
        return 1.0, 0.0, 1.0
    cut = int(ok[-1])
    return float(conf_sorted[cut]), float(kept[cut] / len(order)), float(precision[cut])


def calibrate(
    val_logits: np.ndarray[Any, Any],
    val_labels: np.ndarray[Any, Any],
    *,
    target_precision: float = 0.99,
    bins: int = 15,
) -> Calibration:
    """Fit the temperature, measure ECE before/after and choose the cascade threshold."""
    logits = np.asarray(val_logits, dtype=np.float64)
    labels = np.asarray(val_labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need (N, classes) logits and N labels, got {logits.shape}, {labels.shape}"
        )
    temperature = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, temperature)
    threshold, share, precision = cascade_threshold(after, labels, target_precision)
    return Calibration(
        temperature=temperature,
        ece_before=expected_calibration_error(before, labels, bins),
        ece_after=expected_calibration_error(after, labels, bins),
        nll_before=nll(logits, labels),
        nll_after=nll(logits, labels, temperature),
        cascade_threshold=threshold,
        target_precision=target_precision,
        edge_share=share,
        edge_precision=precision,
        samples=len(labels),
    )
