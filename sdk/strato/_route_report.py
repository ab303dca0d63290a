"""Route a labelled split through a `Client` one row at a time and tabulate where it went.

What `make demo` prints last: answered on the edge / escalated to the cloud, the accuracy of
each part and of the whole, and p50/p99 latency per tier.

>>> report = route_split(client, "digits-mlp", x_test, y_test)
>>> print(format_route_table(report))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from strato._client import Client

__all__ = ["RouteReport", "format_route_table", "route_split"]


@dataclass(slots=True)
class RouteReport:
    """Per row: the tier that answered, whether it was right, and the call's latency."""

    model: str
    tiers: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per tier plus the total: count, share, accuracy, p50/p99 latency (ms)."""
        tiers = np.asarray(self.tiers)
        correct = np.asarray(self.correct, dtype=bool)
        latency = np.asarray(self.latency_ms, dtype=np.float64)
        table = []
        for tier in [*sorted(set(self.tiers)), "all"]:
            mask = np.ones(len(tiers), bool) if tier == "all" else tiers == tier
            count = int(mask.sum())
            table.append(
                {
                    "tier": tier,
                    "count": count,
                    "share": count / max(1, len(tiers)),
                    "accuracy": float(correct[mask].mean()) if count else float("nan"),
                    "p50_ms": float(np.percentile(latency[mask], 50)) if count else float("nan"),
                    "p99_ms": float(np.percentile(latency[mask], 99)) if count else float("nan"),
                }
            )
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rows": self.rows()}


def route_split(
    client: Client, model: str, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], **options: Any
) -> RouteReport:
    """Predict each row of `x` (batch 1) through `client`; `y` holds the true class indices."""
    report = RouteReport(model)
    for row, label in zip(x, y, strict=True):
        prediction = client.predict(model, row[None], **options)
        report.tiers.append(
            "edge" if prediction.served_by == getattr(client.edge, "name", None) else "cloud"
        )
        report.correct.append(int(prediction.output.argmax(axis=-1)[0]) == int(label))
        report.latency_ms.append(prediction.latency_ms)
        report.reasons.append(prediction.route_reason)
    return report


def format_route_table(report: RouteReport) -> str:
    """The report as a fixed-width text table."""
    lines = [
        f"routing {report.model}: {len(report.tiers)} requests",
        f"{'tier':<8}{'answered':>10}{'share':>9}{'accuracy':>10}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for row in report.rows():
        lines.append(
            f"{row['tier']:<8}{row['count']:>10}{row['share']:>9.1%}{row['accuracy']:>10.4f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
        )
    return "\n".join(lines)
