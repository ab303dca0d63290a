"""Calibration: temperature scaling, expected calibration error, the edge/cloud cascade threshold.

`calibrate(val_logits, val_labels)` fits one temperature T on validation logits by minimising the
negative log-likelihood of softmax(logits / T), measures the expected calibration error (ECE)
before and after, and picks the cascade threshold: the lowest calibrated confidence at which the
predictions the edge keeps (confidence >= threshold) reach `target_precision` on validation.
When no threshold does, `cascade_threshold` is None and `threshold_status` "unreachable" (a real
threshold of 1.0 is "reached"). A temperature fit that runs into its search bound is widened once
(to [0.001, 1000]); one that still sits on a bound is refused (`ConfigError`): the validation
logits say nothing about confidence (a random model, or a perfectly separated split).
Only classifiers are calibrated; bad shapes or targets are `ConfigError`s.
The returned dict is what `manifest.calibration` holds; the SDK's Cascade policy applies
`temperature` to the logits and compares the top probability with `cascade_threshold`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from strato import ConfigError

__all__ = [
    "Calibration",
    "calibrate",
    "cascade_threshold",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_bounds",
    "nll",
    "softmax",
]

_T_MIN, _T_MAX = 0.05, 20.0
_T_WIDE = (1e-3, 1e3)
# A fit within this factor of a bound counts as on the bound.
_BOUND_SLACK = 1.02


@dataclass(frozen=True)
class Calibration:
    temperature: float
    temperature_bounds: tuple[float, float]
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    cascade_threshold: float | None
    target_precision: float
    edge_share: float
    edge_precision: float | None
    samples: int
    threshold_status: str = "reached"

    def to_manifest(self) -> dict[str, Any]:
        """Rounded for the manifest (keys the SDK reads: temperature, cascade_threshold; the
        threshold is null when no confidence reaches the target precision)."""
        raw = asdict(self)
        raw["temperature_bounds"] = list(self.temperature_bounds)
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in raw.items()}


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


def _search_temperature(
    logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], bounds: tuple[float, float]
) -> float:
    from scipy.optimize import minimize_scalar  # type: ignore[import-untyped]

    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def _on_bound(temperature: float, bounds: tuple[float, float]) -> bool:
    return temperature <= bounds[0] * _BOUND_SLACK or temperature >= bounds[1] / _BOUND_SLACK


def fit_temperature_bounds(
    logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]
) -> tuple[float, tuple[float, float]]:
    """(T, the search bounds used): T minimising validation NLL in [0.05, 20], widened to
    [0.001, 1000] when it lands on a bound; `ConfigError` when it still does."""
    labels = np.asarray(labels, dtype=np.int64)
    if (np.asarray(logits).argmax(axis=1) == labels).all():
        # Every row right: NLL keeps falling as T -> 0, the fit has no minimum to find.
        raise ConfigError(
            "the temperature fit runs to its lower bound: every validation row is predicted "
            "right (a perfectly separated split); calibrate on more or harder validation rows"
        )
    bounds = (_T_MIN, _T_MAX)
    best = _search_temperature(logits, labels, bounds)
    if _on_bound(best, bounds):
        bounds = _T_WIDE
        best = _search_temperature(logits, labels, bounds)
        if _on_bound(best, bounds):
            side = "lower" if best < 1 else "upper"
            raise ConfigError(
                f"the temperature fit hits its {side} bound ({best:.4g}, searched "
                f"[{bounds[0]}, {bounds[1]}]): the validation logits carry no usable confidence "
                f"({'a perfectly separated split' if side == 'lower' else 'a model near chance'}"
                f"); calibrate on more or harder validation rows, or a trained model"
            )
    # Never return a temperature that is worse than doing nothing.
    return (best if nll(logits, labels, best) <= nll(logits, labels, 1.0) else 1.0), bounds


def fit_temperature(logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> float:
    """The T minimising validation NLL (see `fit_temperature_bounds`)."""
    return fit_temperature_bounds(logits, labels)[0]


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
) -> tuple[float | None, float, float | None]:
    """(threshold, edge_share, edge_precision): the lowest confidence whose kept set reaches
    `target_precision`. When no threshold does: (None, 0.0, None), not a made-up 1.0.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"target_precision must be in (0, 1], got {target_precision}")
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
        return None, 0.0, None
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
    if logits.ndim != 2 or logits.shape[1] < 2 or len(logits) != len(labels) or not len(labels):
        raise ConfigError(
            f"calibration needs (N, classes >= 2) logits and N labels, got {logits.shape}, "
            f"{labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ConfigError(
            f"labels must be class indices in [0, {logits.shape[1]}), got "
            f"{labels.min()}..{labels.max()}"
        )
    temperature, bounds = fit_temperature_bounds(logits, labels)
    before, after = softmax(logits), softmax(logits, temperature)
    threshold, share, precision = cascade_threshold(after, labels, target_precision)
    return Calibration(
        temperature=temperature,
        temperature_bounds=bounds,
        ece_before=expected_calibration_error(before, labels, bins),
        ece_after=expected_calibration_error(after, labels, bins),
        nll_before=nll(logits, labels),
        nll_after=nll(logits, labels, temperature),
        cascade_threshold=threshold,
        target_precision=target_precision,
        edge_share=share,
        edge_precision=precision,
        samples=len(labels),
        threshold_status="reached" if threshold is not None else "unreachable",
    )
