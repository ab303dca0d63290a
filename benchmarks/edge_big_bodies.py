"""Does one huge request stall the edge daemon for everyone else?

Two clients keep posting big multi-input JSON bodies (16 inputs, ~6 MB) while a third one
measures `GET /v2/health/live`. The daemon decodes bodies over `DECODE_INLINE_BYTES` in a
thread; the baseline is the same daemon with that threshold raised so every body decodes on
the event loop (how it was before). Both run in their own process, back to back, in this run.

    .venv/bin/python benchmarks/edge_big_bodies.py            # 8 s per side
    .venv/bin/python benchmarks/edge_big_bodies.py --quick    # 3 s per side

Writes benchmarks/results/edge_big_bodies.{md,json}. Compare the ratio, not the milliseconds:
the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
INPUTS = 16
ROWS = 2
WIDTH = 12_000  # 16 x 2 x 12,000 floats ≈ 6 MB of JSON

SERVE = """
import sys
import strato_edge.server as server
if sys.argv[3] == "inline":
    server.DECODE_INLINE_BYTES = 1 << 40
from pathlib import Path
from strato_edge.config import ServeConfig
from strato_edge.daemon import serve
serve(ServeConfig(store=Path(sys.argv[1]), port=int(sys.argv[2]), max_body_bytes=64 << 20))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bundle(root: Path) -> Path:
    """A model taking 16 FP32 inputs [-1, WIDTH] and returning their sum."""
    import onnx
    from onnx import TensorProto, helper
    from strato import Registry, TensorSpec, make_bundle

    names = [f"x{i}" for i in range(INPUTS)]
    graph = helper.make_graph(
        [helper.make_node("Sum", names, ["total"])],
        "many",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", WIDTH]) for n in names],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["b", WIDTH])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = root / "many-src"
    source.mkdir(parents=True)
    onnx.save(model, str(source / "model.onnx"))
    bundle = make_bundle(
        source,
        name="many",
        version="1",
        inputs=[TensorSpec(n, "FP32", (-1, WIDTH)) for n in names],
        outputs=[TensorSpec("total", "FP32", (-1, WIDTH))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        opset=17,
    )
    registry = Registry(root / "registry")
    registry.publish(bundle, alias="prod")
    return root / "registry"


def _body() -> bytes:
    rng = np.random.default_rng(3)
    inputs = [
        {
            "name": f"x{i}",
            "datatype": "FP32",
            "shape": [ROWS, WIDTH],
            "data": rng.random(ROWS * WIDTH).round(4).tolist(),
        }
        for i in range(INPUTS)
    ]
    return json.dumps({"inputs": inputs}).encode()


def _side(store: Path, mode: str, body: bytes, seconds: float) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STRATO_ORT_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(store), str(port), mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        stop = threading.Event()
        posted: list[int] = []

        def load() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    posted.append(http.post("/v2/models/many/infer", content=body).status_code)

        loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
        for thread in loaders:
            thread.start()
        time.sleep(0.5)
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as http:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                http.get("/v2/health/live")
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.005)
        stop.set()
        for thread in loaders:
            thread.join(60)
    finally:
        server.terminate()
        server.wait(10)
    latencies.sort()
    return {
        "mode": mode,
        "health_probes": len(latencies),
        "health_p50_ms": round(statistics.median(latencies), 2),
        "health_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "health_max_ms": round(latencies[-1], 2),
        "big_requests": len(posted),
        "big_request_statuses": sorted(set(posted)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s per side")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 8.0
    body = _body()
    with tempfile.TemporaryDirectory() as work:
        store = _bundle(Path(work))
        sides = [_side(store, mode, body, seconds) for mode in ("inline", "thread")]
    inline, thread = sides
    result = {
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "body_bytes": len(body),
        "seconds_per_side": seconds,
        "sides": sides,
        "p99_ratio_inline_over_thread": round(inline["health_p99_ms"] / thread["health_p99_ms"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_big_bodies.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {s['mode']} | {s['health_probes']} | {s['health_p50_ms']} | {s['health_p99_ms']} | "
        f"{s['health_max_ms']} | {s['big_requests']} | {s['big_request_statuses']} |"
        for s in sides
    )
    (args.out / "edge_big_bodies.md").write_text(
        "# Health under huge bodies\n\n"
        f"Machine: {result['machine']}. Two clients post a {len(body) / 1e6:.1f} MB JSON body with "
        f"{INPUTS} inputs in a loop; a third probes `/v2/health/live` for {seconds:g} s. `inline`: "
        "every body decoded on the event loop (the old behaviour); `thread`: bodies over "
        "`DECODE_INLINE_BYTES` decoded in a thread (now). Shared machine: compare the ratio.\n\n"
        "| decode | probes | p50 ms | p99 ms | max ms | big requests | statuses |\n"
        "|---|---:|---:|---:|---:|---:|---|\n"
        f"{rows}\n\nhealth p99, inline / thread: **{result['p99_ratio_inline_over_thread']}x**\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
