"""Gates by task: is a quantized artifact still right, on every output?

`gate_outputs(task, reference, candidate, targets=...)` compares the outputs of an artifact with
the fp32 model's on the same gate rows and returns a `GateResult`: one `Check` per figure and
output, the worst one named (output, row, figure, limit). What is checked depends on the
manifest's `task`:

- classification: top-1 agreement with fp32 on the first output (the class scores); with targets
  (class indices), the accuracy drop in points (`max_drop`). Other outputs of a classifier (a
  box, a feature) are gated like generic outputs.
- embedding: cosine to fp32 per row, minimum and mean, and nearest-neighbour agreement (does the
  artifact retrieve the same nearest row as fp32?) on every output.
- regression: relative error (mean |diff| / mean |fp32|) per output; with targets for the first
  output, the change in R² and the relative increase in MAE.
- detection, generic: max and mean absolute difference per output, within tolerances relative to
  the output's fp32 magnitude unless given absolutely.

Integer and boolean outputs (class ids, counts) are compared exactly in every task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, QuantizationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["TASKS", "Check", "GateConfig", "GateResult", "gate_outputs"]

TASKS = ("classification", "embedding", "regression", "detection", "generic")


@dataclass(frozen=True)
class GateConfig:
    """Limits of every gate; only those of the model's task apply."""

    max_drop: float = 1.0
    min_agreement: float = 0.97
    min_cosine: float = 0.99
    min_mean_cosine: float = 0.995
    min_neighbour_agreement: float = 0.9
    max_relative_error: float = 0.02
    max_r2_drop: float = 0.01
    max_mae_increase: float = 0.05
    max_abs_diff: float | None = None
    max_mean_abs_diff: float | None = None
    relative_max_abs: float = 0.05
    relative_mean_abs: float = 0.01

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_cosine", "min_mean_cosine", "min_neighbour_agreement"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [-1, 1], got {value}")
        for name in ("max_relative_error", "max_mae_increase", "relative_max_abs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Check:
    """One figure of one output against its limit. `bound` "max": passes when value <= limit;
    "min": when value >= limit. `row` is the gate row where the output is worst."""

    figure: str
    output: str
    value: float
    limit: float
    bound: str
    row: int | None = None

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.bound == "max" else self.value >= self.limit

    @property
    def severity(self) -> float:
        """How close to failing, comparable across figures: <= 1 passes, larger is worse."""
        if math.isnan(self.value):
            return math.inf
        if self.bound == "max":
            return self.value / self.limit if self.limit > 0 else 1.0 + self.value - self.limit
        headroom = 1.0 - self.limit  # "min" figures (agreement, cosine) top out at 1
        if headroom <= 0:
            return 0.0 if self.value >= self.limit else math.inf
        return (1.0 - self.value) / headroom

    def describe(self) -> str:
        sign = "<=" if self.bound == "max" else ">="
        where = f"output {self.output!r}" + (
            f", worst row {self.row}" if self.row is not None else ""
        )
        return f"{self.figure} {self.value:.6g} (need {sign} {self.limit:.6g}) on {where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "output": self.output,
            "value": _rounded(self.value),
            "limit": _rounded(self.limit),
            "bound": self.bound,
            "row": self.row,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class GateResult:
    """Every check of one artifact; `figures` holds each output's measured figures."""

    task: str
    checks: tuple[Check, ...]
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: int = 0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def worst(self) -> Check:
        return max(self.checks, key=lambda c: c.severity)

    @property
    def severity(self) -> float:
        return self.worst.severity

    def describe(self) -> str:
        state = "passed" if self.passed else "failed"
        return f"{self.task} gate {state}: {self.worst.describe()}"

    def to_metrics(self) -> dict[str, Any]:
        """The manifest's per-artifact gate entry: verdict, the worst check, every check, and
        the headline figures flat (accuracy, agreement, cosine_min, ...) of the first output."""
        worst = self.worst
        first = next(iter(self.figures.values()), {})
        return {
            **{k: _rounded(v) for k, v in first.items()},
            "gate": "passed" if self.passed else "failed",
            "gate_task": self.task,
            "gate_figure": worst.figure,
            "gate_value": _rounded(worst.value),
            "gate_limit": _rounded(worst.limit),
            "worst_output": worst.output,
            "worst_row": worst.row,
            "gate_samples": self.samples,
            "checks": [c.to_dict() for c in self.checks],
            "outputs": {o: {k: _rounded(v) for k, v in f.items()} for o, f in self.figures.items()},
        }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _flat(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    values = np.asarray(array, dtype=np.float64)
    return values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)


def _abs_diff_checks(
    name: str, ref: np.ndarray[Any, Any], got: np.ndarray[Any, Any], config: GateConfig
) -> tuple[list[Check], dict[str, float]]:
    diff = np.abs(_flat(got) - _flat(ref))
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_limit = config.max_abs_diff
    mean_limit = config.max_mean_abs_diff
    if max_limit is None:
        max_limit = config.relative_max_abs * scale or 1e-6
    if mean_limit is None:
        mean_limit = config.relative_mean_abs * scale or 1e-6
    worst_row = int(diff.max(axis=1).argmax()) if diff.size else None
    figures = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    checks = [
        Check("max_abs_diff", name, figures["max_abs_diff"], max_limit, "max", worst_row),
        Check("mean_abs_diff", name, figures["mean_abs_diff"], mean_limit, "max", worst_row),
    ]
    return checks, figures


def _exact_checks(
    name: str, ref: np.ndarray[Any, Any], got: np.ndarray[Any, Any], config: GateConfig
) -> tuple[list[Check], dict[str, float]]:
    same = (_flat(ref) == _flat(got)).all(axis=1)
    row = int(np.argmin(same)) if not same.all() else None
    share = float(same.mean())
    return [Check("exact_match", name, share, config.min_agreement, "min", row)], {
        "exact_match": share
    }


def _classification_checks(
    name: str,
    ref: np.ndarray[Any, Any],
    got: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any] | None,
    config: GateConfig,
) -> tuple[list[Check], dict[str, float]]:
    if ref.ndim != 2 or ref.shape[1] < 2:  # a side output of a classifier (a score, a feature)
        return _abs_diff_checks(name, ref, got, config)
    ref_top, got_top = ref.argmax(axis=1), got.argmax(axis=1)
    agree = ref_top == got_top
    diff = np.abs(got.astype(np.float64) - ref).max(axis=1)
    row = int(np.argmax(np.where(agree, -1.0, diff))) if not agree.all() else int(diff.argmax())
    figures = {"agreement": float(agree.mean())}
    checks = [Check("agreement", name, figures["agreement"], config.min_agreement, "min", row)]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= ref.shape[1]):
            raise ConfigError(
                f"classification targets must be class indices in [0, {ref.shape[1]}) for "
                f"output {name!r}, got {labels.min()}..{labels.max()}"
            )
        reference_accuracy = float((ref_top == labels).mean())
        accuracy = float((got_top == labels).mean())
        drop = round((reference_accuracy - accuracy) * 100, 9)  # 1 row of 100 is 1.0, not 1.0000001
        wrong = (got_top != labels) & (ref_top == labels)
        figures.update(
            accuracy=accuracy, reference_accuracy=reference_accuracy, accuracy_drop_points=drop
        )
        worst = int(np.argmax(wrong)) if wrong.any() else None
        checks.insert(0, Check("accuracy_drop_points", name, drop, config.max_drop, "max", worst))
    return checks, figures


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (norms == 0) & (np.abs(a).sum(axis=1) == np.abs(b).sum(axis=1))
    return np.where(both_zero, 1.0, dots / np.where(norms == 0, 1.0, norms))  # type: ignore[no-any-return]


def _nearest(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Index of each row's nearest other row by cosine similarity."""
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)  # type: ignore[no-any-return]


def _embedding_checks(
    name: str, ref: np.ndarray[Any, Any], got: np.ndarray[Any, Any], config: GateConfig
) -> tuple[list[Check], dict[str, float]]:
    a, b = _flat(ref), _flat(got)
    cosine = np.nan_to_num(_cosines(a, b), nan=-1.0)
    row = int(cosine.argmin())
    figures = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    checks = [
        Check("cosine_min", name, figures["cosine_min"], config.min_cosine, "min", row),
        Check("cosine_mean", name, figures["cosine_mean"], config.min_mean_cosine, "min", row),
    ]
    if len(a) >= 3:
        same = _nearest(a) == _nearest(np.nan_to_num(b))
        figures["neighbour_agreement"] = float(same.mean())
        checks.append(
            Check(
                "neighbour_agreement",
                name,
                figures["neighbour_agreement"],
                config.min_neighbour_agreement,
                "min",
                int(np.argmin(same)) if not same.all() else None,
            )
        )
    return checks, figures


def _r2(prediction: np.ndarray[Any, Any], targets: np.ndarray[Any, Any]) -> float:
    residual = float(((targets - prediction) ** 2).sum())
    total = float(((targets - targets.mean(axis=0)) ** 2).sum())
    return 1.0 - residual / total if total > 0 else 0.0


def _regression_checks(
    name: str,
    ref: np.ndarray[Any, Any],
    got: np.ndarray[Any, Any],
    targets: np.ndarray[Any, Any] | None,
    config: GateConfig,
) -> tuple[list[Check], dict[str, float]]:
    a, b = _flat(ref), _flat(got)
    diff = np.abs(b - a)
    scale = max(float(np.abs(a).mean()), 1e-12)
    row = int(diff.max(axis=1).argmax())
    figures = {"relative_error": float(diff.mean()) / scale, "max_abs_diff": float(diff.max())}
    checks = [
        Check(
            "relative_error", name, figures["relative_error"], config.max_relative_error, "max", row
        )
    ]
    if targets is not None:
        y = _flat(np.asarray(targets))
        if y.shape != a.shape:
            raise ConfigError(
                f"regression targets shaped {np.asarray(targets).shape} do not match output "
                f"{name!r} shaped {ref.shape}"
            )
        r2_ref, r2_got = _r2(a, y), _r2(b, y)
        mae_ref, mae_got = float(np.abs(a - y).mean()), float(np.abs(b - y).mean())
        # Relative to fp32's MAE, floored at 0.1 % of the targets' scale: targets that fp32
        # fits exactly would otherwise turn any rounding into an "infinite" increase.
        floor = 1e-3 * max(float(np.abs(y).mean()), 1e-12)
        mae_increase = (mae_got - mae_ref) / max(mae_ref, floor)
        worst = int(np.abs(b - y).max(axis=1).argmax())
        figures.update(
            r2=r2_got, reference_r2=r2_ref, mae=mae_got, reference_mae=mae_ref,
            mae_increase=mae_increase,
        )  # fmt: skip
        checks += [
            Check("r2_drop", name, r2_ref - r2_got, config.max_r2_drop, "max", worst),
            Check("mae_increase", name, mae_increase, config.max_mae_increase, "max", worst),
        ]
    return checks, figures


def _output_checks(
    task: str,
    name: str,
    ref: np.ndarray[Any, Any],
    got: np.ndarray[Any, Any],
    targets: np.ndarray[Any, Any] | None,
    config: GateConfig,
    *,
    first: bool,
) -> tuple[list[Check], dict[str, float]]:
    if ref.dtype.kind in "biu":
        return _exact_checks(name, ref, got, config)
    if task == "classification":
        if not first:
            return _abs_diff_checks(name, ref, got, config)
        return _classification_checks(name, ref, got, targets, config)
    if task == "embedding":
        return _embedding_checks(name, ref, got, config)
    if task == "regression":
        return _regression_checks(name, ref, got, targets, config)
    return _abs_diff_checks(name, ref, got, config)


def gate_outputs(
    task: str,
    reference: Mapping[str, np.ndarray[Any, Any]],
    candidate: Mapping[str, np.ndarray[Any, Any]],
    *,
    targets: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]] | None = None,
    config: GateConfig | None = None,
) -> GateResult:
    """Check `candidate` against the fp32 `reference` on every output, by `task`.

    `targets` (optional) is an array for the first output, or a mapping output name → array:
    class indices for classification, true values for regression (ignored by other tasks)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = config or GateConfig()
    if not reference:
        raise ConfigError("the fp32 model has no outputs to gate")
    first = next(iter(reference))
    by_output = targets if isinstance(targets, dict) else {first: targets}
    checks: list[Check] = []
    figures: dict[str, dict[str, float]] = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise QuantizationError(f"the artifact has no output {name!r}", output=name)
        got = np.asarray(candidate[name])
        if got.shape != ref.shape:
            raise QuantizationError(
                f"output {name!r} is shaped {got.shape}, fp32 gives {ref.shape}", output=name
            )
        wanted = by_output.get(name)
        found, values = _output_checks(
            task,
            name,
            np.asarray(ref),
            got,
            None if wanted is None else np.asarray(wanted),
            config,
            first=name == first,
        )
        checks += found
        figures[name] = values
    return GateResult(task, tuple(checks), figures, samples=len(reference[first]))
