"""Edge server benchmark: strato edge (batching on/off, JSON/binary) beside a bare Starlette+ORT
endpoint and Seldon MLServer 1.7 (`parallel_workers=0`), same models, machine and load generator.

    .venv/bin/python benchmarks/edge_server.py            # full: c = 1/8/32/64, 8 s per point
    .venv/bin/python benchmarks/edge_server.py --quick    # c = 1/32, 3 s per point

MLServer runs from its own venv (benchmarks/.venv-mlserver: `pip install mlserver==1.7.1
'uvloop<0.22' onnxruntime`); it is skipped with a note when that venv is missing. Writes
benchmarks/results/edge_server.{md,json,png}. The load generator is strato_edge.bench: raw
HTTP/1.1 keep-alive clients on asyncio with the request bytes built once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _edge_models import MODELS, build_registry  # noqa: E402
from strato_edge.bench import run_bench  # noqa: E402

MLSERVER_VENV = HERE / ".venv-mlserver"


@dataclass
class Server:
    name: str
    argv: list[str]
    bodies: tuple[str, ...]
    port: int
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _servers(store: Path, work: Path) -> tuple[list[Server], list[str]]:
    strato = str(Path(sys.executable).with_name("strato"))
    notes: list[str] = []
    servers = []
    for label, batch in (("strato batching", "32"), ("strato no-batching", "1")):
        port = _free_port()
        servers.append(
            Server(
                label,
                [
                    strato,
                    "edge",
                    "serve",
                    "--store",
                    str(store),
                    "--port",
                    str(port),
                    "--max-batch-size",
                    batch,
                    "--log-level",
                    "warning",
                    "--watch-interval",
                    "0",
                ],
                ("json", "binary"),
                port,
            )
        )
    port = _free_port()
    servers.append(
        Server(
            "bare starlette+ort",
            [
                sys.executable,
                str(HERE / "_edge_bare_server.py"),
                "--store",
                str(store),
                "--port",
                str(port),
            ],
            ("json",),
            port,
        )
    )
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if mlserver.exists():
        port = _free_port()
        _mlserver_repo(store, work / "mlserver", port)
        servers.append(
            Server(
                "mlserver 1.7 pw=0",
                [str(mlserver), "start", "."],
                ("json",),
                port,
                cwd=work / "mlserver",
                env={"PYTHONPATH": str(HERE)},
            )
        )
    else:
        notes.append(f"MLServer skipped: {mlserver} missing")
    return servers, notes


def _mlserver_repo(store: Path, repo: Path, port: int) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "http_port": port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "host": "127.0.0.1",
    }
    (repo / "settings.json").write_text(json.dumps(settings))
    for model in MODELS:
        folder = repo / model
        folder.mkdir(exist_ok=True)
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": model,
                    "implementation": "_edge_mlserver_runtime.OnnxRuntimeModel",
                    "parameters": {"uri": str(store / model / "1" / "model.onnx")},
                }
            )
        )


def _start(server: Server) -> subprocess.Popen[bytes]:
    log = open(Path(tempfile.gettempdir()) / f"edge-bench-{server.port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        server.argv,
        cwd=server.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **server.env},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{server.name} not ready in 120 s; see {log.name}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _check_outputs(server: Server, model: str, x: np.ndarray) -> None:
    """Every server must answer the same request correctly before it is timed."""
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    response = httpx.post(
        f"http://127.0.0.1:{server.port}/v2/models/{model}/infer", json=body, timeout=30
    )
    response.raise_for_status()
    out = response.json()["outputs"][0]
    assert out["shape"] == [1, 10], (server.name, out["shape"])


def _point(
    server: Server, model: str, body: str, c: int, x: np.ndarray, args: Any
) -> dict[str, Any]:
    """Best of `args.rounds` runs: neighbours on a shared machine only ever slow a run down."""
    best: dict[str, Any] | None = None
    for _ in range(args.rounds):
        result = run_bench(
            f"http://127.0.0.1:{server.port}",
            f"/v2/models/{model}/infer",
            {"input": x},
            model=model,
            concurrency=c,
            duration_s=args.duration,
            binary=body == "binary",
            processes=args.processes,
            warmup_s=args.warmup,
        )
        row = {"server": server.name, **result.to_dict()}
        if best is None or row["throughput"] > best["throughput"]:
            best = row
    assert best is not None
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All servers up at once (idle ones cost nothing); each point runs every server back to
    back, so drifting background load hits all of them alike."""
    work = Path(tempfile.mkdtemp(prefix="strato-edge-bench-"))
    store = work / "registry"
    build_registry(store)
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    servers, notes = _servers(store, work)
    servers = [s for s in servers if not args.only or any(o in s.name for o in args.only)]
    rows: list[dict[str, Any]] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for server in servers:
            processes.append(_start(server))
            for model in args.models:
                _check_outputs(server, model, x)
        for model in args.models:
            for c in args.concurrency:
                for body in ("json", "binary"):
                    for server in servers:
                        if body in server.bodies:
                            rows.append(_point(server, model, body, c, x, args))
                            _print_row(rows[-1])
    finally:
        for process in processes:
            _stop(process)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "processes": args.processes,
            "quick": args.quick,
        },
        "notes": notes,
        "rows": rows,
    }


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['server']:22s} {row['model']:10s} {row['body']:6s} c={row['concurrency']:<3d} "
        f"{row['throughput']:8.0f} req/s  p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms"
        f"  errors {row['errors']}",
        flush=True,
    )


def _lookup(rows: list[dict[str, Any]], server: str, model: str, body: str, c: int) -> Any:
    for row in rows:
        if (row["server"], row["model"], row["body"], row["concurrency"]) == (
            server,
            model,
            body,
            c,
        ):
            return row
    return None


def _ratio(a: Any, b: Any) -> str:
    return f"{a['throughput'] / b['throughput']:.2f}x" if a and b and b["throughput"] else "n/a"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    lines = [
        "# Edge server benchmark",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['platform']}, Python "
        f"{report['machine']['python']}; load generator strato_edge.bench "
        f"({report['settings']['processes']} process(es)) on the same machine. "
        f"Best of {report['settings']['rounds']} run(s) of {report['settings']['duration_s']:g} s per "
        f"point after {report['settings']['warmup_s']:g} s warm-up; every server is measured back to "
        "back at each point. The CPUs are shared with other work (load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in report['machine']['load_average_at_end'])}): compare "
        "ratios within this run.",
        "",
        "| server | model | body | c | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['model']} | {row['body']} | {row['concurrency']} | "
            f"{row['throughput']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
        )
    lines += ["", "## Targets", ""]
    for model in MODELS:
        c = 32
        ours = _lookup(rows, "strato batching", model, "json", c)
        ours_bin = _lookup(rows, "strato batching", model, "binary", c)
        off = _lookup(rows, "strato no-batching", model, "json", c)
        off_bin = _lookup(rows, "strato no-batching", model, "binary", c)
        mls = _lookup(rows, "mlserver 1.7 pw=0", model, "json", c)
        bare = _lookup(rows, "bare starlette+ort", model, "json", c)
        lines.append(
            f"- {model}, c=32: strato JSON vs MLServer {_ratio(ours, mls)}; binary vs MLServer "
            f"{_ratio(ours_bin, mls)}; binary vs JSON {_ratio(ours_bin, ours)}; batching on vs off "
            f"{_ratio(ours, off)} (JSON), {_ratio(ours_bin, off_bin)} (binary); strato JSON vs bare "
            f"Starlette {_ratio(ours, bare)}"
            + (
                f"; p99 strato {ours['p99_ms']:.1f} ms vs MLServer {mls['p99_ms']:.1f} ms"
                if ours and mls
                else ""
            )
        )
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    path.write_text("\n".join(lines) + "\n")


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    series = sorted({(r["server"], r["body"]) for r in rows})
    fig, axes = plt.subplots(1, len(MODELS), figsize=(6 * len(MODELS), 4.5))
    for ax, model in zip(np.atleast_1d(axes), MODELS, strict=True):
        for server, body in series:
            points = sorted(
                (r["concurrency"], r["throughput"])
                for r in rows
                if (r["server"], r["body"], r["model"]) == (server, body, model)
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=f"{server} ({body})")
        ax.set_title(model)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("req/s")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="c=1/32, 3 s per point")
    parser.add_argument("--duration", type=float, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--rounds", type=int, help="runs per point, best kept (default 1 quick, 2 full)"
    )
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--concurrency", type=int, nargs="+")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--only", nargs="+", help="servers whose name contains one of these")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.concurrency = args.concurrency or ([1, 32] if args.quick else [1, 8, 32, 64])
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_server.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, args.out / "edge_server.md")
    write_chart(report, args.out / "edge_server.png")
    print(f"wrote {args.out}/edge_server.{{md,json,png}}")


if __name__ == "__main__":
    main()
