"""Calibration maths: temperature scaling (bounds widened or refused), ECE, the cascade threshold
(None when unreachable); `strato calibrate` on the served artifact, classifiers only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from strato import ConfigError, Registry
from strato._cli import app
from strato_training.calibrate import (
    calibrate,
    cascade_threshold,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_bounds,
    nll,
    softmax,
)
from strato_training.data import Dataset
from strato_training.optimize import calibrate_bundle
from strato_training.quantize_data import QuantizeData
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
    # None (not a made-up 1.0) when no threshold reaches the target ...
    threshold, share, precision = cascade_threshold(probs, np.ones(3, int), 0.99)
    assert (threshold, share, precision) == (None, 0.0, None)
    # ... while a real threshold of 1.0 stays 1.0.
    certain = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.4]])
    threshold, share, precision = cascade_threshold(certain, np.array([0, 0, 1]), 0.99)
    assert (threshold, share, precision) == (1.0, pytest.approx(2 / 3), 1.0)


def test_no_reachable_threshold_is_said_so_in_the_manifest() -> None:
    logits, labels = confident_logits(n=400, seed=4)
    # The most confident row of all is wrong: no kept set can be 100 % right.
    logits, labels = np.vstack([logits, np.eye(10)[0] * 30]), np.append(labels, 1)
    found = calibrate(logits, labels, target_precision=1.0).to_manifest()
    assert found["cascade_threshold"] is None and found["threshold_status"] == "unreachable"
    assert found["edge_share"] == 0.0
    assert calibrate(logits, labels, target_precision=0.5).to_manifest()["threshold_status"] == (
        "reached"
    )


def test_calibrate_refuses_bad_shapes_and_targets_with_config_errors() -> None:
    with pytest.raises(ConfigError, match="logits"):
        calibrate(np.zeros((3, 2)), np.zeros(4, int))
    with pytest.raises(ConfigError, match="class indices"):
        calibrate(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="target_precision"):
        cascade_threshold(np.full((2, 2), 0.5), np.zeros(2, int), 1.5)


def test_a_fit_at_the_search_bound_is_widened_then_refused() -> None:
    # Over-confident enough that the best T is above 20: the search widens and finds it.
    logits, labels = confident_logits(scale=60.0, seed=2)
    temperature, bounds = fit_temperature_bounds(logits, labels)
    assert bounds == (0.001, 1000.0) and 20 < temperature < 1000
    assert calibrate(logits, labels).temperature_bounds == (0.001, 1000.0)
    # Perfectly separated validation rows: NLL falls forever as T shrinks: refused.
    separated = np.array([[5.0, -5.0], [-5.0, 5.0]] * 20)
    with pytest.raises(ConfigError, match="lower bound"):
        fit_temperature_bounds(separated, np.array([0, 1] * 20))
    # Logits that carry nothing (a model at chance): T runs to the upper bound: refused.
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="upper bound"):
        calibrate(rng.normal(size=(400, 10)), rng.integers(0, 10, 400))


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


@pytest.fixture
def trained_registry(exported_run: Path, tmp_path: Path) -> Registry:
    """digits-mlp:1, the trained MLP published with its run (prod → 1)."""
    from strato_training.publish import PublishConfig, publish

    registry = Registry(tmp_path / "registry")
    publish(exported_run, PublishConfig("digits-mlp", alias="prod"), registry=registry)
    return registry


def test_calibrate_bundle_publishes_the_next_version(
    trained_registry: Registry, digits: Dataset
) -> None:
    new_ref, summary = calibrate_bundle(
        trained_registry, "digits-mlp@prod", digits, target_precision=0.9
    )
    assert str(new_ref) == "digits-mlp:2"
    manifest = trained_registry.manifest(new_ref)
    assert manifest.calibration["target_precision"] == 0.9
    assert manifest.calibration == {**manifest.calibration, **summary["calibration"]}
    assert manifest.calibration["artifact"] == "model.onnx"
    assert manifest.calibration["threshold_status"] == "reached"
    assert manifest.extra["parent"] == "digits-mlp:1"
    # The source version is untouched: versions are immutable.
    assert "temperature" not in trained_registry.manifest("digits-mlp:1").calibration
    trained_registry.open(new_ref)  # every sha256 verifies


def test_calibration_fits_the_artifact_the_edge_serves(
    trained_registry: Registry, digits: Dataset
) -> None:
    """When int8 is the serving default, the temperature and threshold come from int8 logits."""
    from strato_training.measure import predict_logits
    from strato_training.optimize import quantize_bundle

    quantized, _ = quantize_bundle(
        trained_registry, "digits-mlp:1", digits, modes=("int8-dynamic",), latency_batch=256
    )
    bundle = trained_registry.open(quantized)
    # Serve int8 whatever this CPU measured, as a device operator may choose.
    from strato_training.publish import add_artifacts

    served = add_artifacts(
        trained_registry, quantized, serving={"default": "model.int8.dynamic.onnx"}
    )
    _new_ref, summary = calibrate_bundle(trained_registry, served, digits)
    found = summary["calibration"]
    assert found["artifact"] == "model.int8.dynamic.onnx"
    int8_logits = predict_logits(bundle.path_of("model.int8.dynamic.onnx"), digits.val.x)
    expected = calibrate(int8_logits, digits.val.y).to_manifest()
    assert found["temperature"] == expected["temperature"]
    assert found["cascade_threshold"] == expected["cascade_threshold"]


def test_calibrate_refuses_a_model_that_is_not_a_classifier(tmp_path: Path) -> None:
    from quant_models import dense_layers, publish_model, write_dense

    registry = Registry(tmp_path / "registry")
    model = write_dense(
        tmp_path / "reg.onnx",
        inputs={"x": 5},
        trunk=dense_layers(0, [5, 8]),
        heads={"price": dense_layers(1, [8, 1])[0]},
    )
    publish_model(registry, model, tmp_path / "src", name="price", task="regression")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rows.npz", x=rng.normal(size=(40, 5)))
    np.save(tmp_path / "y.npy", rng.normal(size=(40, 1)))
    data = QuantizeData.load(tmp_path / "rows.npz", tmp_path / "y.npy", input_names=["x"])
    with pytest.raises(ConfigError, match="regression model: temperature scaling"):
        calibrate_bundle(registry, "price:1", data=data)
    run = subprocess.run(
        [sys.executable, "-c", "from strato._cli import main; main()", "calibrate", "price:1",
         "--data", str(tmp_path / "rows.npz"), "--targets", str(tmp_path / "y.npy"),
         "--registry", registry.url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "classifiers only" in run.stderr
    assert "Traceback" not in run.stderr
    assert registry.versions("price") == ["1"]


def test_strato_calibrate_cli(trained_registry: Registry) -> None:
    result = CliRunner().invoke(
        app,
        ["calibrate", "digits-mlp:1", "--registry", trained_registry.url, "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["ref"] == "digits-mlp:2" and printed["from"] == "digits-mlp:1"
    assert 0.0 < printed["calibration"]["edge_share"] <= 1.0


@pytest.mark.timeout(120)
def test_calibrate_bundle_on_an_s3_registry(
    tmp_path: Path, trained_registry: Registry, digits: Dataset, s3_client: object
) -> None:
    """The next version is built from the downloaded bundle and uploaded manifest-last."""
    s3 = s3_client
    s3.create_bucket(Bucket="models")  # type: ignore[attr-defined]
    registry = Registry("s3://models/team", s3_client=s3, cache_dir=tmp_path / "cache")
    registry.publish(trained_registry.open("digits-mlp:1"))
    new_ref, _ = calibrate_bundle(registry, "digits-mlp:1", digits)
    assert str(new_ref) == "digits-mlp:2"
    assert registry.versions("digits-mlp") == ["1", "2"]
    assert "cascade_threshold" in registry.open(new_ref).manifest.calibration
