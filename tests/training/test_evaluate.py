"""Evaluation metrics against scikit-learn, ONNX Runtime predictions, the report and charts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from strato import ConfigError
from strato_training.data import Dataset
from strato_training.evaluate import (
    evaluate,
    evaluate_logits,
    plot_curves,
    predict_onnx,
    predict_torch,
)
from strato_training.trainer import TrainResult

PNG = b"\x89PNG\r\n\x1a\n"


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(300), y[:300]] += 4
    report = evaluate_logits(logits, y, list("abcde"))
    predicted = logits.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, zero_division=0)
    assert report.accuracy == pytest.approx((predicted == y).mean())
    assert report.macro_f1 == pytest.approx(f1_score(y, predicted, average="macro"))
    np.testing.assert_allclose(report.precision, precision)
    np.testing.assert_allclose(report.recall, recall)
    np.testing.assert_allclose(report.f1, f1)
    assert list(report.support) == list(support)
    np.testing.assert_array_equal(report.confusion, confusion_matrix(y, predicted))
    raw = report.to_dict()
    assert raw["per_class"][0]["label"] == "a" and len(raw["confusion"]) == 5
    json.dumps(raw)


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    logits = np.array([[5.0, 0.0], [5.0, 0.0]])
    report = evaluate_logits(logits, np.array([0, 1]), ["a", "b"])
    assert report.precision[1] == 0.0 and report.f1[1] == 0.0
    assert not np.isnan(report.macro_f1)


def test_mismatched_logits_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"expected \(N, 3\)"):
        evaluate_logits(np.zeros((4, 2)), np.zeros(4, np.int64), ["a", "b", "c"])
    with pytest.raises(ConfigError, match="class indices"):
        evaluate_logits(np.zeros((2, 2)), np.array([0, 5]), ["a", "b"])


def test_predict_onnx_batches_like_one_call(exported_run: Path) -> None:
    x = np.random.default_rng(0).random((70, 1, 28, 28), dtype=np.float32)
    whole = predict_onnx(exported_run / "model.onnx", x, batch_size=256)
    chunked = predict_onnx(exported_run / "model.onnx", x, batch_size=32)
    assert whole.shape == (70, 10)
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)


def test_evaluate_writes_report_and_charts(
    trained_mlp: TrainResult, digits: Dataset, tmp_path: Path
) -> None:
    report = evaluate(
        trained_mlp.model, digits.test, digits.labels, tmp_path, history=trained_mlp.history
    )
    logits = predict_torch(trained_mlp.model, digits.test.x)
    assert report.accuracy == pytest.approx((logits.argmax(1) == digits.test.y).mean())
    assert report.accuracy > 0.9
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["accuracy"] == pytest.approx(report.accuracy, abs=1e-6)
    assert len(stored["history"]) == len(trained_mlp.history)
    for chart in ("confusion.png", "curves.png"):
        assert (tmp_path / chart).read_bytes()[:8] == PNG


def test_curves_accept_train_only_history(tmp_path: Path) -> None:
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}]
    assert plot_curves(history, tmp_path / "c.png").read_bytes()[:8] == PNG
