"""The per-layer search's bookkeeping, with a judge whose sensitive layers are known: ranking,
grouping under a trial cap, growth until the gate holds, and giving up honestly."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from strato import ConfigError
from strato_training.gates import Check, GateResult
from strato_training.sensitivity import search_layers

LAYERS = [f"layer{i}" for i in range(40)]


def judge_with(sensitive: dict[str, float], calls: list[tuple[str, ...]]):  # type: ignore[no-untyped-def]
    """A gate whose figure is the sum of the error of every sensitive layer still quantized."""

    def judge(fp32_layers: Sequence[str]) -> GateResult:
        calls.append(tuple(fp32_layers))
        error = sum(e for name, e in sensitive.items() if name not in fp32_layers)
        return GateResult("regression", (Check("relative_error", "y", error, 0.02, "max"),))

    return judge


def test_one_culprit_is_found_and_nothing_else_is_kept_fp32() -> None:
    calls: list[tuple[str, ...]] = []
    found = search_layers(LAYERS[:10], judge_with({"layer6": 0.5}, calls), max_trials=24)
    assert found.passed and found.fp32_layers == ("layer6",)
    assert len(found.trials) == 10 == len(calls)  # one trial per layer, no growth needed


def test_two_culprits_under_a_tight_cap_are_found_in_groups() -> None:
    calls: list[tuple[str, ...]] = []
    sensitive = {"layer7": 0.05, "layer23": 0.04, "layer30": 0.001}
    found = search_layers(LAYERS, judge_with(sensitive, calls), max_trials=12)
    assert found.passed
    assert {"layer7", "layer23"} <= set(found.fp32_layers)
    assert len(found.fp32_layers) < len(LAYERS) // 2  # groups, not everything
    assert len(calls) <= 12
    assert found.candidates == 40 and len(found.ranking) == 6  # 40 layers in 6 groups of 7


def test_a_search_that_cannot_pass_says_so_and_never_keeps_every_layer() -> None:
    calls: list[tuple[str, ...]] = []
    sensitive = {name: 0.01 for name in LAYERS[:8]}  # every layer matters a little
    found = search_layers(LAYERS[:8], judge_with(sensitive, calls), max_trials=24)
    assert not found.passed
    assert all(len(c) < 8 for c in calls)  # all-fp32 is the fp32 model: never tried
    summary = found.to_dict()
    assert summary["passed"] is False and summary["trials"] == len(calls)


def test_the_cap_is_validated() -> None:
    with pytest.raises(ConfigError, match="at least 2 trials"):
        search_layers(LAYERS, judge_with({}, []), max_trials=1)
