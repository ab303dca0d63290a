"""The gate figures themselves, on arrays whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from strato import ConfigError, QuantizationError
from strato_training.gates import Check, GateConfig, gate_outputs


def test_classification_counts_agreement_and_the_accuracy_drop_in_points() -> None:
    reference = np.eye(4)[[0, 1, 2, 3] * 25]  # 100 rows, all right
    labels = np.array([0, 1, 2, 3] * 25)
    candidate = reference.copy()
    candidate[[5, 9]] = np.eye(4)[[0, 0]]  # rows 5 and 9 now predict class 0 (wrong)
    result = gate_outputs(
        "classification", {"logits": reference}, {"logits": candidate}, targets=labels
    )
    figures = result.figures["logits"]
    assert figures["agreement"] == pytest.approx(0.98)
    assert figures["accuracy_drop_points"] == pytest.approx(2.0)
    assert not result.passed  # 2 points > the default 1.0
    assert result.worst.figure == "accuracy_drop_points" and result.worst.row == 5
    loose = GateConfig(max_drop=2.5, min_agreement=0.95)
    assert gate_outputs(
        "classification", {"logits": reference}, {"logits": candidate}, targets=labels, config=loose
    ).passed


def test_embedding_cosine_min_mean_and_neighbours() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(30, 16))
    close = reference + rng.normal(scale=1e-3, size=reference.shape)
    assert gate_outputs("embedding", {"e": reference}, {"e": close}).passed
    broken = close.copy()
    broken[7] = -broken[7]  # one row points the other way
    result = gate_outputs("embedding", {"e": reference}, {"e": broken})
    assert not result.passed
    assert result.figures["e"]["cosine_min"] == pytest.approx(-1.0, abs=1e-3)
    assert result.worst.output == "e" and result.worst.row == 7
    assert "cosine" in result.describe() and "worst row 7" in result.describe()


def test_regression_relative_error_and_target_figures() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 1))
    targets = 3 * x + rng.normal(scale=0.1, size=x.shape)
    reference = 3 * x
    result = gate_outputs("regression", {"y": reference}, {"y": reference * 1.001}, targets=targets)
    assert result.passed
    assert result.figures["y"]["relative_error"] == pytest.approx(0.001, rel=1e-3)
    assert result.figures["y"]["r2"] > 0.99
    shifted = reference + 0.5
    bad = gate_outputs("regression", {"y": reference}, {"y": shifted}, targets=targets)
    assert not bad.passed
    failing = {c.figure for c in bad.checks if not c.passed}
    assert failing == {"relative_error", "r2_drop", "mae_increase"}
    # No accuracy or agreement figures for a regressor: nothing to report "passed" by accident.
    assert "accuracy" not in bad.to_metrics() and "agreement" not in bad.to_metrics()


def test_generic_tolerances_are_relative_to_the_output_unless_given() -> None:
    reference = np.linspace(0, 100, 50).reshape(10, 5)
    nudged = reference + 1.0  # 1 % of the peak
    result = gate_outputs("detection", {"boxes": reference}, {"boxes": nudged})
    assert result.passed  # max 1.0 <= 5.0, mean 1.0 <= 1.0
    strict = GateConfig(max_abs_diff=0.5)
    assert not gate_outputs(
        "generic", {"boxes": reference}, {"boxes": nudged}, config=strict
    ).passed


def test_every_output_is_gated_and_the_worst_one_named() -> None:
    rng = np.random.default_rng(2)
    logits, boxes = rng.normal(size=(20, 3)), rng.normal(size=(20, 4))
    broken_boxes = boxes.copy()
    broken_boxes[3] += 10
    result = gate_outputs(
        "classification",
        {"logits": logits, "boxes": boxes},
        {"logits": logits, "boxes": broken_boxes},
    )
    assert not result.passed
    assert result.worst.output == "boxes" and result.worst.row == 3
    assert set(result.figures) == {"logits", "boxes"}
    metrics = result.to_metrics()
    assert metrics["worst_output"] == "boxes" and metrics["gate"] == "failed"


def test_integer_outputs_must_match_exactly() -> None:
    ids = np.arange(10).reshape(10, 1)
    other = ids.copy()
    other[4] = 99
    result = gate_outputs("detection", {"classes": ids}, {"classes": other})
    assert result.figures["classes"]["exact_match"] == pytest.approx(0.9)
    assert not result.passed and result.worst.row == 4


def test_nan_fails_and_a_wrong_shape_or_missing_output_is_a_quantization_error() -> None:
    reference = np.ones((4, 3))
    nan = reference.copy()
    nan[1, 1] = np.nan
    result = gate_outputs("generic", {"o": reference}, {"o": nan})
    assert not result.passed and math.isinf(result.severity)
    with pytest.raises(QuantizationError, match="shaped") as caught:
        gate_outputs("generic", {"o": reference}, {"o": np.ones((4, 2))})
    assert caught.value.output == "o"
    with pytest.raises(QuantizationError, match="no output 'o'"):
        gate_outputs("generic", {"o": reference}, {"other": reference})


def test_bad_task_targets_and_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        gate_outputs("ranking", {"o": np.ones((2, 2))}, {"o": np.ones((2, 2))})
    with pytest.raises(ConfigError, match="class indices"):
        gate_outputs(
            "classification",
            {"o": np.ones((2, 2))},
            {"o": np.ones((2, 2))},
            targets=np.array([0, 5]),
        )
    with pytest.raises(ConfigError, match="min_cosine"):
        GateConfig(min_cosine=1.5)


def test_severity_orders_figures_on_one_scale() -> None:
    assert Check("cosine_min", "e", 0.995, 0.99, "min").severity == pytest.approx(0.5)
    assert Check("cosine_min", "e", 0.98, 0.99, "min").severity == pytest.approx(2.0)
    assert Check("relative_error", "y", 0.01, 0.02, "max").severity == pytest.approx(0.5)
    assert Check("accuracy_drop_points", "y", -4.0, -5.0, "max").severity > 1
    assert not Check("accuracy_drop_points", "y", -4.0, -5.0, "max").passed
