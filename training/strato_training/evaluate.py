"""Evaluation: accuracy, per-class precision/recall/F1, macro F1, confusion matrix, charts.

`evaluate_logits` works on any model's logits (torch, ONNX Runtime, a quantized artifact), so
every artifact of a bundle is scored the same way. `evaluate` is the pipeline step: it scores a
trained model on the test split and writes `report.json`, `confusion.png` and `curves.png`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from strato_training.data import Split

__all__ = [
    "EvalReport",
    "evaluate",
    "evaluate_logits",
    "plot_confusion",
    "plot_curves",
    "predict_onnx",
    "predict_torch",
]

REPORT = "report.json"
CONFUSION_PNG = "confusion.png"
CURVES_PNG = "curves.png"


@dataclass(frozen=True)
class EvalReport:
    """Scores of one model on one split. `confusion[i, j]`: true class i predicted as j."""

    accuracy: float
    macro_f1: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: np.ndarray[Any, Any]
    labels: tuple[str, ...]
    samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (for the manifest's metrics and `--json`)."""
        per_class = [
            {
                "label": label,
                "precision": round(p, 6),
                "recall": round(r, 6),
                "f1": round(f, 6),
                "support": s,
            }
            for label, p, r, f, s in zip(
                self.labels, self.precision, self.recall, self.f1, self.support, strict=True
            )
        ]
        return {
            "accuracy": round(self.accuracy, 6),
            "macro_f1": round(self.macro_f1, 6),
            "samples": self.samples,
            "per_class": per_class,
            "confusion": self.confusion.astype(int).tolist(),
            "labels": list(self.labels),
            **self.extra,
        }


def evaluate_logits(
    logits: np.ndarray[Any, Any], y: np.ndarray[Any, Any], labels: Sequence[str]
) -> EvalReport:
    """Score logits (N, C) against integer targets (N,). Classes with no predictions score 0."""
    logits = np.asarray(logits)
    y = np.asarray(y).astype(np.int64)
    labels = tuple(str(label) for label in labels)
    classes = len(labels)
    if logits.ndim != 2 or logits.shape[0] != y.shape[0] or logits.shape[1] != classes:
        raise ConfigError(
            f"logits shaped {logits.shape} do not match {y.shape[0]} targets and "
            f"{classes} labels; expected (N, {classes})"
        )
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ConfigError(
            f"targets must be class indices in [0, {classes}), got {y.min()}..{y.max()}"
        )
    predicted = logits.argmax(axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted_counts = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(hits, predicted_counts, out=np.zeros(classes), where=predicted_counts > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(classes), where=total > 0)
    present = support > 0
    return EvalReport(
        accuracy=float(hits.sum() / max(len(y), 1)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        precision=tuple(float(v) for v in precision),
        recall=tuple(float(v) for v in recall),
        f1=tuple(float(v) for v in f1),
        support=tuple(int(v) for v in support),
        confusion=confusion,
        labels=labels,
        samples=len(y),
    )


def predict_onnx(
    path: str | os.PathLike[str], x: np.ndarray[Any, Any], batch_size: int = 256
) -> np.ndarray[Any, Any]:
    """Logits of an ONNX model (first input, first output) with ONNX Runtime on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    chunks = [
        session.run([output_name], {input_name: x[start : start + batch_size]})[0]
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def predict_torch(
    model: torch.nn.Module, x: np.ndarray[Any, Any], batch_size: int = 256
) -> np.ndarray[Any, Any]:
    """Logits of a torch model on CPU, in eval mode, without gradients."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    chunks: list[np.ndarray[Any, Any]] = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            chunks.append(model(batch.to(device)).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def plot_confusion(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Write the confusion matrix as a PNG heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(report.labels)
    size = max(4.0, 0.45 * classes + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(report.confusion, cmap="Blues")
    axes.set_xticks(range(classes), report.labels)
    axes.set_yticks(range(classes), report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"accuracy {report.accuracy:.3f} · macro F1 {report.macro_f1:.3f}")
    peak = report.confusion.max() or 1
    for (i, j), count in np.ndenumerate(report.confusion):
        if count:
            colour = "white" if count > peak / 2 else "black"
            axes.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike[str]) -> Path:
    """Write loss and accuracy per epoch (train and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    scored = [
        (row["val_loss"], epoch)
        for row, epoch in zip(history, epochs, strict=True)
        if "val_loss" in row
    ]
    best_epoch = min(scored)[1] if scored else None  # the weights the trainer keeps
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, axes in (("loss", loss_axes), ("accuracy", accuracy_axes)):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}") for row in history]
            if any(v is not None for v in values):
                axes.plot(
                    epochs, [np.nan if v is None else v for v in values], marker="o", label=split
                )
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best")
        axes.set_xlabel("epoch")
        axes.set_title(key)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def evaluate(
    model: torch.nn.Module,
    split: Split,
    labels: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    history: Sequence[dict[str, float]] = (),
    extra: dict[str, Any] | None = None,
) -> EvalReport:
    """Score `model` on `split`; write `report.json`, `confusion.png`, `curves.png` to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate_logits(predict_torch(model, split.x), split.y, labels)
    report.extra.update(extra or {})
    if history:
        report.extra["history"] = list(history)
    (out / REPORT).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    plot_confusion(report, out / CONFUSION_PNG)
    if history:
        plot_curves(history, out / CURVES_PNG)
    return report


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A `report.json` written by `evaluate` (a dict, as stored)."""
    try:
        return dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no evaluation report at {path}; run `strato evaluate` first") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a JSON report: {exc}") from exc
