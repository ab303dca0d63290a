"""Prometheus text exposition for the edge daemon, written by hand (no extra dependency).

Updated from the event loop only (the batcher reports batch sizes from there too), so plain
dicts need no locks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "Histogram", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, metric: str, labels: str) -> Iterable[str]:
        running = 0
        for bound, hits in zip(self.buckets, self.counts, strict=True):
            running += hits
            yield f'{metric}_bucket{{{labels},le="{bound:g}"}} {running}'
        yield f'{metric}_bucket{{{labels},le="+Inf"}} {self.count}'
        yield f"{metric}_sum{{{labels}}} {self.total:.6f}"
        yield f"{metric}_count{{{labels}}} {self.count}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Requests by model and status, latency and batch-size histograms, queue depth."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size: dict[str, Histogram] = {}
        self.swaps: dict[str, int] = defaultdict(int)

    def request(self, model: str, status: int, seconds: float | None = None) -> None:
        self.requests[(model, str(status))] += 1
        if seconds is not None:
            hist = self.latency.get(model)
            if hist is None:
                hist = self.latency[model] = Histogram(LATENCY_BUCKETS)
            hist.observe(seconds)

    def batch(self, model: str, size: int) -> None:
        hist = self.batch_size.get(model)
        if hist is None:
            hist = self.batch_size[model] = Histogram(tuple(float(b) for b in BATCH_BUCKETS))
        hist.observe(float(size))

    def swap(self, model: str) -> None:
        self.swaps[model] += 1

    def render(self, queue_depth: Callable[[], Mapping[str, int]]) -> str:
        out = [
            "# HELP strato_edge_requests_total Inference requests by model and HTTP status.",
            "# TYPE strato_edge_requests_total counter",
        ]
        for (model, status), count in sorted(self.requests.items()):
            out.append(
                f'strato_edge_requests_total{{model="{_label(model)}",status="{status}"}} {count}'
            )
        out += [
            "# HELP strato_edge_request_duration_seconds Inference request latency.",
            "# TYPE strato_edge_request_duration_seconds histogram",
        ]
        for model, hist in sorted(self.latency.items()):
            out += hist.lines("strato_edge_request_duration_seconds", f'model="{_label(model)}"')
        out += [
            "# HELP strato_edge_batch_size Requests' rows per engine run.",
            "# TYPE strato_edge_batch_size histogram",
        ]
        for model, hist in sorted(self.batch_size.items()):
            out += hist.lines("strato_edge_batch_size", f'model="{_label(model)}"')
        out += [
            "# HELP strato_edge_queue_depth Requests waiting for a batch.",
            "# TYPE strato_edge_queue_depth gauge",
        ]
        for model, depth in sorted(queue_depth().items()):
            out.append(f'strato_edge_queue_depth{{model="{_label(model)}"}} {depth}')
        out += [
            "# HELP strato_edge_model_swaps_total Hot swaps of the served version.",
            "# TYPE strato_edge_model_swaps_total counter",
        ]
        for model, count in sorted(self.swaps.items()):
            out.append(f'strato_edge_model_swaps_total{{model="{_label(model)}"}} {count}')
        return "\n".join(out) + "\n"
