"""Per-layer sensitivity search: which layers must stay fp32 for a recipe to pass its gate.

When no uniform recipe passes, `search_layers` takes the best one and measures, for each layer
it quantizes, the gate figure of the artifact with only that layer left in fp32 ("drop one at a
time"). Layers are then kept in fp32 most-helpful first, growing the set until the gate holds
(ONNX Runtime's `nodes_to_exclude`), the way TensorRT users bisect precision with Polygraphy.

Trials are capped (`max_trials`, each one quantizes and gates a model): with more layers than the
ranking budget, neighbouring layers are ranked in groups, so a 100-layer encoder costs the same
number of trials as a 10-layer one. Gate sets should be small (tens of rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strato import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from strato_training.gates import GateResult

__all__ = ["LayerSearch", "Trial", "search_layers"]


@dataclass(frozen=True)
class Trial:
    """One quantized build: the layers it kept in fp32 and how the gate judged it."""

    fp32_layers: tuple[str, ...]
    severity: float
    passed: bool
    figure: str


@dataclass(frozen=True)
class LayerSearch:
    """The outcome: `fp32_layers` of the first passing build (or of the last tried when none
    passed), every trial in order, and the ranking (layer group → severity when kept fp32)."""

    passed: bool
    fp32_layers: tuple[str, ...]
    trials: tuple[Trial, ...]
    ranking: tuple[tuple[tuple[str, ...], float], ...]
    candidates: int

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "fp32_layers": list(self.fp32_layers),
            "candidates": self.candidates,
            "trials": len(self.trials),
            "ranking": [
                {"layers": list(group), "severity": _finite(severity)}
                for group, severity in self.ranking
            ],
        }


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 6)


def _groups(layers: Sequence[str], count: int) -> list[tuple[str, ...]]:
    """`layers` cut into at most `count` contiguous groups of near-equal size."""
    count = max(1, min(count, len(layers)))
    size = math.ceil(len(layers) / count)
    return [tuple(layers[i : i + size]) for i in range(0, len(layers), size)]


def _growth(groups: int) -> list[int]:
    """How many of the ranked groups to keep fp32 at each step: 1, 2, 3, then x1.5, never all
    of them (an artifact with every layer in fp32 is the fp32 model with extra steps)."""
    steps, k = [], 1
    while k < groups:
        steps.append(k)
        k = k + 1 if k < 3 else math.ceil(k * 1.5)
    return steps


def search_layers(
    layers: Sequence[str],
    judge: Callable[[Sequence[str]], GateResult],
    *,
    max_trials: int = 24,
) -> LayerSearch:
    """Rank `layers` by how much keeping each in fp32 helps, then keep the most helpful ones in
    fp32 until `judge(fp32_layers)` (build + gate one artifact) passes or trials run out."""
    if max_trials < 2:
        raise ConfigError(f"a layer search needs at least 2 trials, got {max_trials}")
    if not layers:
        return LayerSearch(False, (), (), (), 0)
    trials: list[Trial] = []

    def run(fp32_layers: tuple[str, ...]) -> Trial:
        result = judge(fp32_layers)
        trial = Trial(fp32_layers, result.severity, result.passed, result.worst.figure)
        trials.append(trial)
        return trial

    groups = _groups(layers, max(1, max_trials // 2))
    ranked = sorted(((g, run(g).severity) for g in groups), key=lambda item: item[1])
    passing = [t for t in trials if t.passed]
    if passing:  # one layer alone was the culprit: keep the smallest such build
        best = min(passing, key=lambda t: (len(t.fp32_layers), t.severity))
        return LayerSearch(True, best.fp32_layers, tuple(trials), tuple(ranked), len(layers))
    last: Trial | None = None
    for k in _growth(len(ranked))[1:]:
        if len(trials) >= max_trials:
            break
        chosen = tuple(name for group, _ in ranked[:k] for name in group)
        last = run(tuple(n for n in layers if n in chosen))
        if last.passed:
            return LayerSearch(True, last.fp32_layers, tuple(trials), tuple(ranked), len(layers))
    kept = last.fp32_layers if last is not None else ranked[0][0]
    return LayerSearch(False, kept, tuple(trials), tuple(ranked), len(layers))
