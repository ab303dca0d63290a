"""Prometheus text exposition for the edge daemon, written by hand (no extra dependency).

Updated from the event loop only (the batcher reports batch sizes from there too), so plain
dicts need no locks.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "InferStats",
    "Metrics",
    "start_metrics_server",
]

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


@dataclass
class InferStats:
    """Per (model, version) counts and durations in Triton's statistics terms."""

    success: int = 0
    success_s: float = 0.0
    fail: int = 0
    fail_s: float = 0.0
    queued: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, tuple[int, float]] = field(default_factory=dict)

    def request(self, ok: bool, seconds: float) -> None:
        if ok:
            self.success += 1
            self.success_s += seconds
        else:
            self.fail += 1
            self.fail_s += seconds
        self.last_inference_ms = int(time.time() * 1000)

    def execution(self, rows: int, compute_s: float, queue_s: Iterable[float]) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.compute_s += compute_s
        for wait in queue_s:
            self.queued += 1
            self.queue_s += wait
        count, total = self.batches.get(rows, (0, 0.0))
        self.batches[rows] = (count + 1, total + compute_s)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Requests by model and status, latency and batch-size histograms, queue depth."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size: dict[str, Histogram] = {}
        self.swaps: dict[str, int] = defaultdict(int)
        self.stats: dict[tuple[str, str], InferStats] = {}

    def stats_for(self, model: str, version: str) -> InferStats:
        """The Triton-style statistics of one model version (zeros before its first request)."""
        found = self.stats.get((model, version))
        if found is None:
            found = self.stats[(model, version)] = InferStats()
        return found

    def inference(self, model: str, version: str, *, ok: bool, seconds: float) -> None:
        """One request to a known model version finished (HTTP or gRPC)."""
        self.stats_for(model, version).request(ok, seconds)

    def execution(
        self, model: str, version: str, rows: int, compute_s: float, queue_s: Iterable[float]
    ) -> None:
        """One engine run of `rows` rows took `compute_s`; its requests waited `queue_s`."""
        self.stats_for(model, version).execution(rows, compute_s, queue_s)

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


_METRICS_TYPE = "text/plain; version=0.0.4"


async def _answer_metrics(
    render: Callable[[], str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method in (b"GET", b"HEAD") and path == b"/metrics":
            status, body, media = "200 OK", render().encode(), _METRICS_TYPE
        else:
            status, body, media = (
                "404 Not Found",
                b'{"error": "only GET /metrics here"}',
                ("application/json"),
            )
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {media}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + (body if method != b"HEAD" else b"")
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        pass  # a client that hung up or sent junk gets nothing
    except asyncio.TimeoutError:  # not the builtin on Python 3.10
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start_metrics_server(render: Callable[[], str], host: str, port: int) -> asyncio.Server:
    """A bare `GET /metrics` responder on its own port, without the API's token: for a
    Prometheus scraper on a network the inference API should not be open to."""
    return await asyncio.start_server(
        lambda r, w: _answer_metrics(render, r, w), host, port, limit=16 << 10
    )
