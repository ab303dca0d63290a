"""Edge data path at batch 1: what each client pays to reach `strato edge serve` on this machine.

For the demo-sized MLP (1x1x28x28 float32, 3 KB) and a 3x224x224 float32 image (602 KB, a
global-average-pool head, so inference is small and the bytes dominate), p50/p99 of:

- floor: a raw socket to a do-nothing asyncio HTTP responder (benchmarks/_trivial_responder.py)
  sending the same request bytes; what any Python server on this loop spends at least;
- raw socket → edge (prebuilt request bytes), `http.client`, httpx, all the same binary request;
- `Client(Edge)` over TCP, over the Unix socket (`--uds`), with system shared memory
  (`--allow-shm`, `Edge(..., shared_memory=True)`), and `Client(Local)` in-process;
- uint8 on the wire: the image model as float32 NCHW vs its uint8 NHWC-baked variant (same
  weights, benchmarks/_edge_latency_uint8.py): body bytes, `Client(Edge)` and
  `Client(cloud=Lambda)` → `strato cloud local` p50/p99.

Clients run interleaved in rounds so drifting background load hits all alike. Then edge
throughput at c=64 (MLP) beside the bare Starlette+ORT endpoint of benchmarks/edge_server.py.

    .venv/bin/python benchmarks/edge_latency.py            # 2,000 calls per client and model
    .venv/bin/python benchmarks/edge_latency.py --quick    # 300 calls, 2 x 1.5 s throughput
    .venv/bin/python benchmarks/edge_latency.py --quick --only-uint8   # that section alone,
                                                 # merged into the existing results files

Writes benchmarks/results/edge_latency.{md,json,png}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _edge_latency_uint8 as uint8_section  # noqa: E402
from _edge_latency_models import build_registry  # noqa: E402
from _edge_latency_report import headline, write_chart, write_markdown  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

FLOOR = "floor: raw socket → uvloop protocol responder"
STREAMS_FLOOR = "floor: raw socket → asyncio streams responder"
GOALS = {"client": 1.3, "server": 1.5, "shm_vs_local": 3.0, "throughput": 1.2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in 120 s")


def _ready_http(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status == 200
    finally:
        connection.close()


def start_servers(root: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(root / "servers.log", "wb")  # noqa: SIM115 - closed with the processes
    floor_port, streams_port = _free_port(), _free_port()
    edge_port, bare_port = _free_port(), _free_port()
    uds = str(root / "edge.sock")
    strato = str(Path(sys.executable).with_name("strato"))
    argv = {
        "floor": [sys.executable, str(HERE / "_trivial_responder.py"), "--port", str(floor_port)],
        "streams": [
            sys.executable, str(HERE / "_trivial_responder.py"), "--port", str(streams_port),
            "--streams",
        ],
        "edge": [
            strato, "edge", "serve", "--store", str(root / "registry"), "--port", str(edge_port),
            "--uds", uds, "--allow-shm", "--threads", "1", "--watch-interval", "0",
            "--log-level", "warning",
        ],
        "bare": [
            sys.executable, str(HERE / "_edge_bare_server.py"), "--store",
            str(root / "registry"), "--port", str(bare_port),
        ],
    }  # fmt: skip
    processes = {
        name: subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**env, "OMP_NUM_THREADS": "1"}
        )
        for name, args in argv.items()
    }

    def listening(port: int) -> Callable[[], bool]:
        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        return ready

    _wait(listening(floor_port), processes["floor"], "the floor responder")
    _wait(listening(streams_port), processes["streams"], "the streams floor responder")
    _wait(lambda: _ready_http(edge_port), processes["edge"], "strato edge serve")
    _wait(lambda: _ready_http(bare_port), processes["bare"], "the bare Starlette server")
    return {
        "processes": processes,
        "log": log,
        "floor_port": floor_port,
        "streams_port": streams_port,
        "edge_port": edge_port,
        "bare_port": bare_port,
        "uds": uds,
    }


# --- the clients -------------------------------------------------------------------------------
class RawSocket:
    """Prebuilt request bytes, one `sendall`, read by Content-Length: the least a client does."""

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def __call__(self) -> None:
        self.sock.sendall(self.request)
        data = b""
        while (end := data.find(b"\r\n\r\n")) < 0:
            data += self._recv()
        length = 0
        for line in data[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        have = len(data) - end - 4
        while have < length:
            have += len(self._recv())

    def close(self) -> None:
        self.sock.close()


def clients_for(
    servers: dict[str, Any], model: str, x: np.ndarray, registry: Path
) -> dict[str, tuple[Callable[[], Any], Callable[[], None]]]:
    """name -> (one call, close)."""
    import httpx
    from strato import Client, Edge, Local
    from strato_edge.bench import build_request

    path = f"/v2/models/{model}/infer"
    edge_url = f"http://127.0.0.1:{servers['edge_port']}"
    _, _, request = build_request(edge_url, path, {"input": x}, binary=True)
    head, _, body = request.partition(b"\r\n\r\n")
    headers = {
        k.decode(): v.strip().decode()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if k.lower() not in (b"host", b"content-length")
    }
    floor = RawSocket(servers["floor_port"], request)
    streams = RawSocket(servers["streams_port"], request)
    raw = RawSocket(servers["edge_port"], request)
    stdlib = http.client.HTTPConnection("127.0.0.1", servers["edge_port"])

    def stdlib_call() -> None:
        stdlib.request("POST", path, body=body, headers=headers)
        stdlib.getresponse().read()

    general = httpx.Client(base_url=edge_url)
    tcp = Client(edge=Edge(edge_url))
    uds = Client(edge=Edge(f"unix://{servers['uds']}"))
    shm = Client(edge=Edge(f"unix://{servers['uds']}", shared_memory=True))
    local = Client(edge=Local(str(registry / "registry"), threads=1))
    return {
        FLOOR: (floor, floor.close),
        STREAMS_FLOOR: (streams, streams.close),
        "raw socket → edge": (raw, raw.close),
        "http.client → edge": (stdlib_call, stdlib.close),
        "httpx → edge": (lambda: general.post(path, content=body, headers=headers).read(), general.close),
        "Client(Edge) TCP": (lambda: tcp.predict(model, x), tcp.close),
        "Client(Edge) UDS": (lambda: uds.predict(model, x), uds.close),
        "Client(Edge) UDS + shared memory": (lambda: shm.predict(model, x), shm.close),
        "Client(Local)": (lambda: local.predict(model, x), local.close),
    }  # fmt: skip


def measure(clients: dict[str, Any], calls: int, rounds: int, warmup: int) -> dict[str, Any]:
    samples: dict[str, list[int]] = {name: [] for name in clients}
    for call, _ in clients.values():
        for _ in range(warmup):
            call()
    per_round = max(1, calls // rounds)
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, (call, _) in clients.items():
            timings = samples[name]
            for _ in range(per_round):
                started = clock()
                call()
                timings.append(clock() - started)
    stats = {}
    for name, timings in samples.items():
        micros = np.array(timings) / 1000.0
        stats[name] = {
            "p50_us": float(np.percentile(micros, 50)),
            "p99_us": float(np.percentile(micros, 99)),
            "mean_us": float(micros.mean()),
            "calls": len(timings),
        }
    return stats


def throughput(servers: dict[str, Any], x: np.ndarray, args: argparse.Namespace) -> list[Any]:
    """c=64 req/s per server and body: interleaved rounds, best kept (neighbours on a shared
    machine only ever slow a run down, and each round hits every server alike)."""
    from strato_edge.bench import run_bench

    edge_pid, bare_pid = servers["processes"]["edge"].pid, servers["processes"]["bare"].pid
    points = [
        ("strato edge", servers["edge_port"], True, edge_pid),
        ("strato edge", servers["edge_port"], False, edge_pid),
        ("bare starlette+ort", servers["bare_port"], False, bare_pid),
    ]
    best: dict[tuple[str, bool], dict[str, Any]] = {}
    for _ in range(args.throughput_rounds):
        for name, port, binary, pid in points:
            url = f"http://127.0.0.1:{port}"
            load = {"model": "mlp", "concurrency": 64, "binary": binary, "warmup_s": 0.0}
            run_bench(url, "/v2/models/mlp/infer", {"input": x}, duration_s=args.warmup, **load)
            cpu = _cpu_seconds(pid)  # after the warm-up: only the measured answers are charged
            result = run_bench(
                url, "/v2/models/mlp/infer", {"input": x}, duration_s=args.duration, **load
            )
            spent = _cpu_seconds(pid) - cpu
            answered = max(result.requests, 1)
            row = {"server": name, **result.to_dict(), "server_cpu_us": spent / answered * 1e6}
            kept = best.get((name, binary))
            if kept is None or row["throughput"] > kept["throughput"]:
                best[(name, binary)] = row
            print(
                f"{name:20s} {row['body']:6s} c=64 {result.throughput:8.0f} req/s, "
                f"server CPU {row['server_cpu_us']:.0f} us/answer",
                flush=True,
            )
    return list(best.values())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratios(latency: dict[str, Any], rows: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model, stats in latency.items():
        p50 = {name: s["p50_us"] for name, s in stats.items()}
        raw = p50["raw socket → edge"]
        out[model] = {
            "client_vs_raw": p50["Client(Edge) TCP"] / raw,
            "server_vs_floor": raw / p50[STREAMS_FLOOR],
            "server_vs_uvloop_floor": raw / p50[FLOOR],
            "shm_vs_local": p50["Client(Edge) UDS + shared memory"] / p50["Client(Local)"],
            "uds_vs_tcp": p50["Client(Edge) UDS"] / p50["Client(Edge) TCP"],
        }
    by = {(r["server"], r["body"]): r for r in rows}
    bare = by.get(("bare starlette+ort", "json"))
    binary, json_ = by.get(("strato edge", "binary")), by.get(("strato edge", "json"))
    if bare and binary and json_:
        out["throughput"] = {
            "binary_vs_bare": binary["throughput"] / bare["throughput"],
            "json_vs_bare": json_["throughput"] / bare["throughput"],
            # CPU per answer is steadier than req/s on a shared machine: < 1 is cheaper
            "binary_cpu_vs_bare": binary["server_cpu_us"] / bare["server_cpu_us"],
            "json_cpu_vs_bare": json_["server_cpu_us"] / bare["server_cpu_us"],
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="strato-edge-latency-"))
    inputs = build_registry(root)
    images = uint8_section.build_uint8_model(root)
    servers = start_servers(root)
    emulators = uint8_section.start_emulators(root, servers["log"], _free_port, args.cloud)
    for process, port in emulators.values():
        _wait(lambda port=port: _ready_http(port), process, "strato cloud local")
    servers["processes"].update({f"cloud {m}": p for m, (p, _) in emulators.items()})
    latency: dict[str, Any] = {}
    rows: list[Any] = []
    try:
        for model, x in inputs.items() if not args.only_uint8 else ():
            clients = clients_for(servers, model, x, root)
            try:
                latency[model] = measure(clients, args.calls, args.rounds, args.warmup_calls)
            finally:
                for _, close in clients.values():
                    close()
            for name, s in latency[model].items():
                print(f"{model:6s} {name:40s} p50 {s['p50_us']:8.1f}  p99 {s['p99_us']:8.1f} µs")
        rows = throughput(servers, inputs["mlp"], args) if not args.only_uint8 else []
        uint8 = uint8_section.run_section(
            f"http://127.0.0.1:{servers['edge_port']}", emulators or None, images,
            lambda c: measure(c, args.calls, args.rounds, args.warmup_calls),
            lambda c: measure(c, args.cloud_calls, args.rounds, 5),
        )  # fmt: skip
    finally:
        for process in servers["processes"].values():
            process.terminate()
        for process in servers["processes"].values():
            process.wait(20)
        servers["log"].close()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "settings": {k: getattr(args, k) for k in ("calls", "rounds", "warmup_calls", "duration", "throughput_rounds", "quick", "cloud_calls")},
        "goals": GOALS,
        "latency": latency,
        "throughput": rows,
    }  # fmt: skip
    report["ratios"] = ratios(latency, rows) if not args.only_uint8 else {}
    report["uint8"] = {**uint8, "settings": report["settings"], "machine": report["machine"]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 calls, 2 x 1.5 s throughput")
    parser.add_argument("--calls", type=int, help="timed calls per client and model")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup-calls", type=int, default=50)
    parser.add_argument("--duration", type=float, help="seconds per throughput point")
    parser.add_argument("--warmup", type=float, default=0.5, help="throughput warm-up seconds")
    parser.add_argument(
        "--throughput-rounds", type=int, help="interleaved throughput rounds (best kept)"
    )
    parser.add_argument("--cloud-calls", type=int, help="timed Lambda-emulator calls per model")
    parser.add_argument("--no-cloud", dest="cloud", action="store_false", help="edge only")
    parser.add_argument("--only-uint8", action="store_true", help="only the uint8 section")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.calls = args.calls or (300 if args.quick else 2000)
    args.duration = args.duration or (1.5 if args.quick else 5.0)
    args.throughput_rounds = args.throughput_rounds or (2 if args.quick else 3)
    args.cloud_calls = args.cloud_calls or (150 if args.quick else 500)
    earlier_path = args.out / "edge_latency.json"
    if args.only_uint8 and not earlier_path.exists():
        parser.error(f"--only-uint8 merges into {earlier_path}: run the whole benchmark first")
    report = run(args)
    if args.only_uint8:  # keep the other sections' figures from the last full run
        earlier = json.loads(earlier_path.read_text())
        report = {**earlier, "uint8": {**report["uint8"], "own_run": True}}
    report["headline"] = headline(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_latency.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, args.out / "edge_latency.md")
    write_chart(report, args.out / "edge_latency.png")
    print(f"wrote {args.out}/edge_latency.{{md,json,png}}")


if __name__ == "__main__":
    main()
