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


def _labels(**values: str) -> str:
    return ",".join(f'{key}="{_label(value)}"' for key, value in values.items())


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _process_lines() -> list[str]:
    """The standard `process_*` metrics (Prometheus client conventions), read from /proc."""
    import os
    import resource

    times = os.times()
    out = [
        *_family("process_cpu_seconds_total", "counter", "User and system CPU time."),
        f"process_cpu_seconds_total {times.user + times.system:.3f}",
        *_family("process_start_time_seconds", "gauge", "Start time since the epoch."),
        f"process_start_time_seconds {_START_TIME:.3f}",
        *_family("process_max_fds", "gauge", "Maximum number of open file descriptors."),
        f"process_max_fds {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}",
    ]
    with contextlib.suppress(OSError):
        pages = open("/proc/self/statm").read().split()  # noqa: SIM115 - two numbers, read once
        size = os.sysconf("SC_PAGE_SIZE")
        out += [
            *_family("process_virtual_memory_bytes", "gauge", "Virtual memory size."),
            f"process_virtual_memory_bytes {int(pages[0]) * size}",
            *_family("process_resident_memory_bytes", "gauge", "Resident memory size."),
            f"process_resident_memory_bytes {int(pages[1]) * size}",
        ]
    with contextlib.suppress(OSError):
        fds = len(os.listdir("/proc/self/fd"))
        out += [
            *_family("process_open_fds", "gauge", "Open file descriptors."),
            f"process_open_fds {fds}",
        ]
    return out


def _build_lines() -> list[str]:
    import platform

    from strato import __version__

    labels = _labels(version=__version__, python=platform.python_version())
    return [
        *_family("strato_build_info", "gauge", "The strato build serving: always 1."),
        f"strato_build_info{{{labels}}} 1",
    ]


_START_TIME = time.time()


class Metrics:
    """Requests by model, version, precision and status; latency, queue-time and compute-time
    histograms; batch sizes; queue depth; hot swaps; Triton-style statistics."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.queue_time: dict[tuple[str, str], Histogram] = {}
        self.compute_time: dict[tuple[str, str], Histogram] = {}
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
        waits = list(queue_s)
        self.stats_for(model, version).execution(rows, compute_s, waits)
        _observe(self.compute_time, (model, version), compute_s)
        for wait in waits:
            _observe(self.queue_time, (model, version), wait)

    def request(
        self,
        model: str,
        status: int,
        seconds: float | None = None,
        *,
        version: str = "",
        precision: str = "",
    ) -> None:
        self.requests[(model, version, precision, str(status))] += 1
        if seconds is not None:
            _observe(self.latency, (model, version), seconds)

    def batch(self, model: str, size: int) -> None:
        hist = self.batch_size.get(model)
        if hist is None:
            hist = self.batch_size[model] = Histogram(tuple(float(b) for b in BATCH_BUCKETS))
        hist.observe(float(size))

    def swap(self, model: str) -> None:
        self.swaps[model] += 1

    def render(self, queue_depth: Callable[[], Mapping[str, int]]) -> str:
        out = _family(
            "strato_edge_requests_total",
            "counter",
            "Inference requests by model, version, precision and status (HTTP; gRPC mapped).",
        )
        for (model, version, precision, status), count in sorted(self.requests.items()):
            labels = _labels(model=model, version=version, precision=precision, status=status)
            out.append(f"strato_edge_requests_total{{{labels}}} {count}")
        for name, help_text, table in (
            ("strato_edge_request_duration_seconds", "Request latency, end to end.", self.latency),
            ("strato_edge_queue_duration_seconds", "Time a request waited for its engine run.",
             self.queue_time),
            ("strato_edge_compute_duration_seconds", "Engine run time (one batch).",
             self.compute_time),
        ):  # fmt: skip
            out += _family(name, "histogram", help_text)
            for (model, version), hist in sorted(table.items()):
                out += hist.lines(name, _labels(model=model, version=version))
        out += _family("strato_edge_batch_size", "histogram", "Requests' rows per engine run.")
        for model, hist in sorted(self.batch_size.items()):
            out += hist.lines("strato_edge_batch_size", _labels(model=model))
        out += _family("strato_edge_queue_depth", "gauge", "Requests waiting for a batch.")
        for model, depth in sorted(queue_depth().items()):
            out.append(f"strato_edge_queue_depth{{{_labels(model=model)}}} {depth}")
        out += _family(
            "strato_edge_model_swaps_total", "counter", "Hot swaps of the served version."
        )
        for model, count in sorted(self.swaps.items()):
            out.append(f"strato_edge_model_swaps_total{{{_labels(model=model)}}} {count}")
        out += _build_lines() + _process_lines()
        return "\n".join(out) + "\n"


def _observe(table: dict[tuple[str, str], Histogram], key: tuple[str, str], value: float) -> None:
    hist = table.get(key)
    if hist is None:
        hist = table[key] = Histogram(LATENCY_BUCKETS)
    hist.observe(value)


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
