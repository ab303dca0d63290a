"""Soak: the edge daemon under sustained load, then `Client` across two edge crashes.

Not a test. Two phases, everything on 127.0.0.1, every process started and stopped here:

1. edge: `strato edge serve` (a subprocess) driven by 64 keep-alive connections for 60 s with
   binary OIP requests. Pass: zero errors, RSS growth after warm-up < 10 %; p50/p99 reported.
2. client: `strato.Client(edge=Edge(...), cloud=Lambda(<strato cloud local>))` called from 64
   threads for 60 s while the edge is SIGKILLed and restarted twice. Pass: zero failed calls.

Usage: python benchmarks/soak.py [--quick] [--duration 60] [--concurrency 64]
Writes benchmarks/results/soak.{md,json,png}; exits 1 when a pass criterion fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soak_results import write_chart, write_markdown
from report import machine_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = "digits-mlp"
RSS_LIMIT = 0.10


# --- the model and the processes ---------------------------------------------------------------
def build_store(workdir: Path) -> tuple[Path, Path]:
    """A folder registry with `digits-mlp:1` (784-128-10 MLP, fixed random weights) @prod."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from strato import Registry, TensorSpec
    from strato._bundle import make_bundle

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.05, (784, 128)).astype(np.float32),
        "b1": np.zeros(128, np.float32),
        "w2": rng.normal(0, 0.2, (128, 10)).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = workdir / "bundle"
    source.mkdir(parents=True)
    onnx.save(model, str(source / "model.onnx"))
    bundle = make_bundle(
        source,
        name=MODEL,
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(str(i) for i in range(10)),
    )
    registry = Registry(workdir / "registry")
    registry.publish(bundle, alias="prod")
    return workdir / "registry", source


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def strato_command() -> list[str]:
    script = Path(sys.executable).with_name("strato")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from strato._cli import main; main()"]


def start(
    args: list[str], ready: str, log: Path, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[str], str]:
    """Start a strato command; return it and its first stdout line that contains `ready`."""
    stream = log.open("a")
    proc = subprocess.Popen(
        [*strato_command(), *args], stdout=subprocess.PIPE, stderr=stream, text=True
    )
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
            return proc, line
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{' '.join(args[:2])} did not start; see {log}")


def start_edge(store: Path, port: int, log: Path) -> subprocess.Popen[str]:
    args = ["edge", "serve", "--store", str(store), "--port", str(port), "--watch-interval", "0"]
    return start(args, "strato edge serving", log)[0]


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    """Resident set size from /proc (Linux); 0.0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- phase 1: the edge alone -------------------------------------------------------------------
@dataclass
class Samples:
    """Per-request records: start offset (s), latency (ms), outcome."""

    t: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)

    def add(self, t: float, ms: float, outcome: str) -> None:
        self.t.append(t)
        self.ms.append(ms)
        self.outcome.append(outcome)


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


async def _connection(port: int, request: bytes, t0: float, stop_at: float, out: Samples) -> None:
    reader = writer = None
    while (now := time.perf_counter()) < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            status = await _read_status(reader)
            out.add(now - t0, (time.perf_counter() - now) * 1000, str(status))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out.add(now - t0, (time.perf_counter() - now) * 1000, type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def drive(port: int, concurrency: int, duration_s: float, t0: float) -> Samples:
    from strato_edge.bench import build_request

    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    url = f"http://127.0.0.1:{port}"
    _, _, request = build_request(url, f"/v2/models/{MODEL}/infer", {"input": x}, binary=True)
    out = Samples()

    async def main() -> None:
        stop_at = time.perf_counter() + duration_s
        await asyncio.gather(
            *(_connection(port, request, t0, stop_at, out) for _ in range(concurrency))
        )

    asyncio.run(main())
    return out


def sample_rss(pid: int, t0: float, stop: threading.Event, into: list[tuple[float, float]]) -> None:
    while not stop.wait(0.5):
        into.append((time.perf_counter() - t0, rss_mib(pid)))


def soak_edge(store: Path, workdir: Path, concurrency: int, duration_s: float) -> dict[str, Any]:
    port = free_port()
    edge = start_edge(store, port, workdir / "edge.log")
    rss: list[tuple[float, float]] = []
    done = threading.Event()
    try:
        warmup = min(5.0, duration_s / 6)
        drive(port, concurrency, warmup, time.perf_counter())  # JIT-free, but pools and arenas grow
        t0 = time.perf_counter()
        sampler = threading.Thread(target=sample_rss, args=(edge.pid, t0, done, rss), daemon=True)
        rss.append((0.0, rss_mib(edge.pid)))
        sampler.start()
        samples = drive(port, concurrency, duration_s, t0)
        done.set()
        sampler.join()
        rss.append((time.perf_counter() - t0, rss_mib(edge.pid)))
    finally:
        done.set()
        stop(edge)
    return summarize_edge(samples, rss, concurrency, duration_s)


def summarize_edge(
    samples: Samples, rss: list[tuple[float, float]], concurrency: int, duration_s: float
) -> dict[str, Any]:
    ms = np.array(samples.ms)
    ok = np.array([o == "200" for o in samples.outcome])
    outcomes: dict[str, int] = {}
    for outcome in samples.outcome:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    start_rss, end_rss = rss[0][1], rss[-1][1]
    growth = (end_rss - start_rss) / start_rss if start_rss else float("nan")
    p50, p99 = np.percentile(ms[ok], [50, 99]) if ok.any() else (float("nan"),) * 2
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests": len(ms),
        "errors": int((~ok).sum()),
        "outcomes": outcomes,
        "throughput_rps": float(ok.sum() / duration_s),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()) if ms.size else float("nan"),
        "rss_start_mib": start_rss,
        "rss_end_mib": end_rss,
        "rss_max_mib": max(r for _, r in rss),
        "rss_growth": growth,
        "rss_series": rss,
        "rps_series": per_second(samples.t, ok, duration_s),
        "passed": bool((~ok).sum() == 0 and growth < RSS_LIMIT and ok.any()),
    }


def per_second(t: list[float], ok: Any, duration_s: float) -> list[int]:
    seconds = np.floor(np.array(t)[np.asarray(ok, bool)]).astype(int)
    return np.bincount(seconds, minlength=int(np.ceil(duration_s)))[
        : int(np.ceil(duration_s))
    ].tolist()


# --- phase 2: the client across edge crashes ---------------------------------------------------
def start_cloud(bundle: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    """`strato cloud local` on a free port; returns it and its Lambda endpoint URL."""
    args = ["cloud", "local", "--model-uri", str(bundle), "--port", str(free_port())]
    proc, line = start(args, "strato cloud local ready", log)
    url = next(part for part in line.split() if part.startswith("lambda=")).removeprefix("lambda=")
    return proc, url


def make_client(edge_port: int, lambda_url: str, concurrency: int) -> Any:
    import boto3
    from botocore.config import Config
    from strato import Client, Edge, Lambda

    for key, value in (("AWS_ACCESS_KEY_ID", "soak"), ("AWS_SECRET_ACCESS_KEY", "soak")):
        os.environ.setdefault(key, value)  # the emulator checks no signature
    config = Config(max_pool_connections=concurrency, retries={"total_max_attempts": 1})
    lam = boto3.client("lambda", endpoint_url=lambda_url, region_name="us-east-1", config=config)
    edge = Edge(f"http://127.0.0.1:{edge_port}", timeout=5.0, max_connections=concurrency)
    return Client(edge=edge, cloud=Lambda("strato-infer", client=lam), timeout=15.0)


def call_loop(client: Any, t0: float, stop_at: float, out: Samples, failures: list[str]) -> None:
    x = np.random.default_rng(threading.get_ident() % 2**32).random((1, 1, 28, 28), np.float32)
    while (now := time.perf_counter()) < stop_at:
        try:
            served_by = client.predict(MODEL, x).served_by
        except Exception as exc:  # a failed call is what this phase counts
            served_by = "failed"
            failures.append(f"{now - t0:.2f}s {type(exc).__name__}: {str(exc)[:200]}")
        out.add(now - t0, (time.perf_counter() - now) * 1000, served_by)


def crash_edge_twice(
    edge: subprocess.Popen[str], store: Path, port: int, t0: float, duration_s: float, log: Path
) -> tuple[subprocess.Popen[str], list[tuple[float, str]]]:
    """SIGKILL the edge at 1/3 and 2/3 of the run; restart it after a few seconds down."""
    events: list[tuple[float, str]] = []
    down_s = max(1.0, duration_s / 12)
    for k in (1, 2):
        time.sleep(max(0.0, t0 + duration_s * k / 3 - time.perf_counter()))
        edge.kill()
        edge.wait()
        events.append((time.perf_counter() - t0, "edge killed"))
        time.sleep(down_s)
        edge = start_edge(store, port, log)
        events.append((time.perf_counter() - t0, "edge back"))
    return edge, events


def soak_client(
    store: Path, bundle: Path, workdir: Path, concurrency: int, duration_s: float
) -> dict[str, Any]:
    port = free_port()
    cloud, lambda_url = start_cloud(bundle, workdir / "cloud.log")
    edge: subprocess.Popen[str] | None = None
    try:
        edge = start_edge(store, port, workdir / "edge-client.log")
        client = make_client(port, lambda_url, concurrency)
        client.predict(MODEL, np.zeros((1, 1, 28, 28), np.float32))  # metadata, connections
        per_thread = [Samples() for _ in range(concurrency)]
        failures: list[str] = []
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=call_loop, args=(client, t0, t0 + duration_s, out, failures))
            for out in per_thread
        ]
        for thread in threads:
            thread.start()
        edge, events = crash_edge_twice(
            edge, store, port, t0, duration_s, workdir / "edge-client.log"
        )
        for thread in threads:
            thread.join()
        client.close()
    finally:
        stop(edge)
        stop(cloud)
    return summarize_client(per_thread, failures, events, concurrency, duration_s)


def summarize_client(
    per_thread: list[Samples],
    failures: list[str],
    events: list[tuple[float, str]],
    concurrency: int,
    duration_s: float,
) -> dict[str, Any]:
    t = [v for s in per_thread for v in s.t]
    ms = np.array([v for s in per_thread for v in s.ms])
    served = [v for s in per_thread for v in s.outcome]
    by_tier = {name: served.count(name) for name in sorted(set(served))}
    done = [start + lat / 1000 for start, lat in zip(t, ms, strict=True)]  # when it answered
    series = {name: per_second(done, [v == name for v in served], duration_s) for name in by_tier}
    p50, p99 = np.percentile(ms, [50, 99]) if ms.size else (float("nan"),) * 2
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "calls": len(served),
        "failed": len(failures),
        "failures": failures[:20],
        "served_by": by_tier,
        "throughput_cps": len(served) / duration_s,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()) if ms.size else float("nan"),
        "events": events,
        "series": series,
        "passed": bool(not failures and served),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s phases instead of 60 s.")
    parser.add_argument("--duration", type=float, help="Seconds per phase (default 60).")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-client", action="store_true", help="Only the edge phase.")
    args = parser.parse_args(argv)
    duration = args.duration or (10.0 if args.quick else 60.0)
    with tempfile.TemporaryDirectory(prefix="strato-soak-") as tmp:
        workdir = Path(tmp)
        store, bundle = build_store(workdir)
        print(f"soak: edge, {args.concurrency} connections, {duration:.0f} s", flush=True)
        edge = soak_edge(store, workdir, args.concurrency, duration)
        client = None
        if not args.skip_client:
            print(f"soak: client, {args.concurrency} threads, {duration:.0f} s", flush=True)
            client = soak_client(store, bundle, workdir, args.concurrency, duration)
        if not (edge["passed"] and (client is None or client["passed"])):
            for log in sorted(workdir.glob("*.log")):  # the servers' stderr, for the post-mortem
                print(
                    f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-20:])
                )
    result = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine_info(),
        "edge": edge,
        "client": client,
        "passed": bool(edge["passed"] and (client is None or client["passed"])),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, RESULTS / "soak.md", RSS_LIMIT)
    write_chart(result, RESULTS / "soak.png")
    print((RESULTS / "soak.md").read_text())
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
