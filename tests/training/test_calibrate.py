"""Calibration maths: temperature scaling, ECE, the cascade threshold; and `strato calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, Registry
from strato._cli import app
from strato_training.calibrate import (
    calibrate,
    cascade_threshold,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)
from strato_training.optimize import calibrate_bundle
from typer.testing import CliRunner


def confident_logits(
    n: int = 2000, classes: int = 10, accuracy: float = 0.85, scale: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose argmax is right `accuracy` of the time; `scale` > 1 makes them over-confident."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(
        rng.random(n) < accuracy, labels, (labels + rng.integers(1, classes, n)) % classes
    )
    logits = rng.normal(0.0, 1.0, (n, classes))
    # Right answers come with larger margins than wrong ones, as in a trained classifier.
    margin = np.where(predicted == labels, rng.uniform(1.0, 5.0, n), rng.uniform(0.0, 2.0, n))
    logits[np.arange(n), predicted] += margin
    return logits * scale, labels


def test_temperature_fixes_an_over_confident_model() -> None:
    logits, labels = confident_logits(scale=4.0)
    result = calibrate(logits, labels)
    assert result.temperature > 1.5
    assert result.nll_after < result.nll_before
    assert result.ece_after < result.ece_before / 2
    assert result.ece_after < 0.08


def test_temperature_sharpens_an_under_confident_model() -> None:
    logits, labels = confident_logits(scale=0.3)
    temperature = fit_temperature(logits, labels)
    assert temperature < 1.0
    assert nll(logits, labels, temperature) < nll(logits, labels)


def test_temperature_never_makes_nll_worse() -> None:
    logits, labels = confident_logits(n=50, seed=3)
    temperature = fit_temperature(logits, labels)
    assert nll(logits, labels, temperature) <= nll(logits, labels) + 1e-12


def test_ece_is_zero_for_a_perfectly_calibrated_toy_and_large_for_a_liar() -> None:
    probs = np.array([[1.0, 0.0]] * 10)
    assert expected_calibration_error(probs, np.zeros(10, int)) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.ones(10, int)) == pytest.approx(1.0)


def test_softmax_rows_sum_to_one_and_temperature_flattens() -> None:
    logits, _ = confident_logits(n=20)
    sharp, flat = softmax(logits), softmax(logits, 5.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0)
    assert (flat.max(axis=1) < sharp.max(axis=1)).all()


def test_cascade_threshold_meets_the_target_precision_on_validation() -> None:
    logits, labels = confident_logits(scale=2.0, seed=1)
    probs = softmax(logits, fit_temperature(logits, labels))
    threshold, share, precision = cascade_threshold(probs, labels, 0.99)
    kept = probs.max(axis=1) >= threshold
    assert (probs.argmax(axis=1)[kept] == labels[kept]).mean() >= 0.99
    assert precision >= 0.99
    assert share == pytest.approx(kept.mean())
    assert 0.0 < share < 0.85  # keeps some traffic but not the errors
    # A lower target keeps more traffic on the edge.
    _, looser_share, _ = cascade_threshold(probs, labels, 0.9)
    assert looser_share > share


def test_cascade_threshold_when_the_edge_is_always_right_or_always_wrong() -> None:
    probs = softmax(np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]]))
    threshold, share, _ = cascade_threshold(probs, np.zeros(3, int), 0.99)
    assert share == 1.0
    assert threshold == pytest.approx(probs.max(axis=1).min())
    threshold, share, _ = cascade_threshold(probs, np.ones(3, int), 0.99)
    assert (threshold, share) == (1.0, 0.0)


def test_calibrate_refuses_bad_shapes_and_targets() -> None:
    with pytest.raises(ValueError, match="logits"):
        calibrate(np.zeros((3, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="target_precision"):
        cascade_threshold(np.full((2, 2), 0.5), np.zeros(2, int), 1.5)


def test_manifest_dict_has_the_keys_the_cascade_policy_reads() -> None:
    logits, labels = confident_logits(n=300)
    found = calibrate(logits, labels, target_precision=0.95).to_manifest()
    for key in (
        "temperature",
        "ece_before",
        "ece_after",
        "cascade_threshold",
        "target_precision",
        "edge_share",
    ):
        assert isinstance(found[key], float)
    json.dumps(found)


def test_calibrate_bundle_publishes_the_next_version(
    tiny_registry: Registry, digits: object
) -> None:
    new_ref, summary = calibrate_bundle(tiny_registry, "tiny@prod", digits, target_precision=0.9)
    assert str(new_ref) == "tiny:3"
    manifest = tiny_registry.manifest(new_ref)
    assert manifest.calibration["target_precision"] == 0.9
    assert manifest.calibration == {**manifest.calibration, **summary["calibration"]}
    assert manifest.extra["parent"] == "tiny:1"
    # The source version is untouched: versions are immutable.
    assert tiny_registry.manifest("tiny:1").calibration == {
        "temperature": 1.0,
        "cascade_threshold": 0.8,
    }
    tiny_registry.open(new_ref)  # every sha256 verifies


def test_strato_calibrate_cli(tiny_registry: Registry) -> None:
    result = CliRunner().invoke(
        app,
        ["calibrate", "tiny:2", "--registry", tiny_registry.url, "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["ref"] == "tiny:3" and printed["from"] == "tiny:2"
    assert 0.0 <= printed["calibration"]["edge_share"] <= 1.0


@pytest.mark.timeout(120)
def test_calibrate_bundle_on_an_s3_registry(
    tmp_path: Path, tiny_bundle: Bundle, digits: object, s3_client: object
) -> None:
    """The next version is built from the downloaded bundle and uploaded manifest-last."""
    s3 = s3_client
    s3.create_bucket(Bucket="models")
    registry = Registry("s3://models/team", s3_client=s3, cache_dir=tmp_path / "cache")
    registry.publish(tiny_bundle)
    new_ref, _ = calibrate_bundle(registry, "tiny:1", digits)
    assert str(new_ref) == "tiny:2"
    assert registry.versions("tiny") == ["1", "2"]
    assert "cascade_threshold" in registry.open(new_ref).manifest.calibration
