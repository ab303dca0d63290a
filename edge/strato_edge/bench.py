"""`strato edge bench`: drive a running server with N keep-alive clients for T seconds.

The load generator speaks raw HTTP/1.1 over asyncio streams with the request bytes built once,
and can spread its clients over several processes, so it is not what limits the server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from strato.wire import HEADER_LENGTH, encode_request

__all__ = ["BenchResult", "build_request", "random_inputs", "run_bench"]


@dataclass
class BenchResult:
    url: str
    model: str
    concurrency: int
    duration_s: float
    body: str
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_inputs(metadata: dict[str, Any], batch: int = 1, seed: int = 0) -> dict[str, Any]:
    """Random tensors that fit a model's OIP metadata (-1 axes become `batch`)."""
    from strato.wire import dtype_of

    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in metadata["inputs"]:
        shape = [batch if d == -1 else d for d in spec["shape"]]
        dtype = dtype_of(spec["datatype"])
        if dtype.kind == "f":
            inputs[spec["name"]] = rng.random(shape).astype(dtype)
        else:
            inputs[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def build_request(
    url: str,
    path: str,
    inputs: dict[str, Any],
    *,
    binary: bool,
    token: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[str, int, bytes]:
    """(host, port, the full HTTP/1.1 request bytes) for one inference POST."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body, header_length = encode_request(inputs, binary=binary, binary_outputs=binary)
    headers = {
        "Host": f"{host}:{port}",
        "Content-Length": str(len(body)),
        "Content-Type": "application/octet-stream" if header_length else "application/json",
    }
    if header_length is not None:
        headers[HEADER_LENGTH] = str(header_length)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra_headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return host, port, head.encode() + b"\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def _client(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    latencies: list[float],
    statuses: dict[str, int],
) -> None:
    writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if _ANSWERED is not None and statuses is not _WARMUP:
                _ANSWERED.value += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            statuses["connection-error"] = statuses.get("connection-error", 0) + 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


_WARMUP: dict[str, int] = {}  # the statuses of warm-up requests: counted nowhere
_ANSWERED: Any = None  # a shared counter of measured answers (for a live progress bar)


def _count_answers(counter: Any) -> None:
    """Pool initializer (and the in-process case): where `_client` counts measured answers."""
    global _ANSWERED
    _ANSWERED = counter


def _process(args: tuple[str, int, bytes, int, float, float]) -> tuple[list[float], dict[str, int]]:
    host, port, request, clients, warmup_s, duration_s = args

    async def main() -> tuple[list[float], dict[str, int]]:
        if warmup_s > 0:
            await asyncio.gather(
                *(
                    _client(host, port, request, time.perf_counter() + warmup_s, [], _WARMUP)
                    for _ in range(clients)
                )
            )
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        stop_at = time.perf_counter() + duration_s
        await asyncio.gather(
            *(_client(host, port, request, stop_at, latencies, statuses) for _ in range(clients))
        )
        return latencies, statuses

    return asyncio.run(main())


def run_bench(
    url: str,
    path: str,
    inputs: dict[str, Any],
    *,
    model: str = "",
    concurrency: int = 8,
    duration_s: float = 10.0,
    binary: bool = True,
    token: str | None = None,
    processes: int = 1,
    warmup_s: float = 1.0,
    extra_headers: dict[str, str] | None = None,
    answered: Any = None,
) -> BenchResult:
    """Run the load; latencies are per request, throughput counts 2xx answers only.

    `answered`, a `multiprocessing` RawValue, counts measured answers as they come (every load
    process adds to it), for a live rate while the run lasts."""
    host, port, request = build_request(
        url, path, inputs, binary=binary, token=token, extra_headers=extra_headers
    )
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    jobs = [(host, port, request, n, warmup_s, duration_s) for n in shares]
    if processes == 1:
        _count_answers(answered)
        try:
            results = [_process(jobs[0])]
        finally:
            _count_answers(None)
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes, _count_answers, (answered,)) as pool:
            results = pool.map(_process, jobs)
    latencies = np.array([x for lat, _ in results for x in lat]) * 1000.0
    statuses: dict[str, int] = {}
    for _, counts in results:
        for key, count in counts.items():
            statuses[key] = statuses.get(key, 0) + count
    ok = sum(c for k, c in statuses.items() if k.startswith("2"))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies.size else (0.0,) * 3
    return BenchResult(
        url=url,
        model=model or path,
        concurrency=concurrency,
        duration_s=duration_s,
        body="binary" if binary else "json",
        requests=ok,
        errors=sum(statuses.values()) - ok,
        throughput=ok / duration_s,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        statuses=statuses,
    )
