"""What the SDK adds per call, at batch 1, on the reference MLP and the small CNN (not a test).

In one run, interleaved round by round so that machine noise hits every variant alike:
- `Client(Local).predict` vs a raw ONNX Runtime `session.run` on the same session, and the
  layers between (`Engine.infer` validates the input, `Local.infer` wraps it);
- `Client(Edge).predict` vs a raw httpx POST of the same binary body to the same
  `strato edge serve` (a subprocess), over the same kind of keep-alive connection.

Targets (issue 6): `Client(Local)` adds <= 3 µs per call (<= 1.25x on the MLP, <= 1.10x on the
CNN); `Client(Edge)` <= 1.20x the raw POST.

`--against REF` also compares the in-process layers with another commit of this repository
(`git archive REF`): two worker processes, one per tree, each with its own registry, take turns
round by round so that machine noise hits both alike (issue 11: no slower than before).

    .venv/bin/python benchmarks/sdk_overhead.py [--quick] [--against REF]

Writes benchmarks/results/sdk_overhead.{md,json,png}.
"""

from __future__ import annotations

import argparse
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

import httpx
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

RESULTS = Path(__file__).parent / "results"
STRATO = str(Path(sys.executable).with_name("strato"))


def build_registry(root: Path) -> Any:
    """digits-shaped MLP and CNN (random weights: speed does not depend on them) in a registry."""
    import torch
    from strato import Registry, TensorSpec

    try:
        from strato import make_bundle
    except ImportError:  # an older tree (--against)
        from strato._bundle import make_bundle  # type: ignore[attr-defined, no-redef]
    from strato_training.export import ExportConfig, export_onnx
    from strato_training.models import build_model

    torch.manual_seed(0)
    registry = Registry(root / "registry")
    for name in ("mlp", "cnn"):
        folder = root / name
        model = build_model(name, input_shape=(1, 28, 28), num_classes=10)
        export_onnx(
            model,
            folder / "model.onnx",
            input_shape=(1, 28, 28),
            config=ExportConfig(exporter="legacy"),
        )
        bundle = make_bundle(
            folder,
            name=f"bench-{name}",
            version="1",
            inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
            outputs=[TensorSpec("logits", "FP32", (-1, 10))],
            artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
            labels=tuple(str(i) for i in range(10)),
        )
        registry.publish(bundle)
    return registry


def time_rounds(
    variants: dict[str, Callable[[], Any]], *, rounds: int, calls: int
) -> dict[str, dict[str, float]]:
    """µs per call for each variant: median and min over rounds of `calls` calls each."""
    for fn in variants.values():  # warm up
        for _ in range(max(10, calls // 10)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, fn in variants.items():
            start = clock()
            for _ in range(calls):
                fn()
            samples[name].append((clock() - start) / calls * 1e6)
    return {
        name: {"median_us": float(np.median(values)), "min_us": float(np.min(values))}
        for name, values in samples.items()
    }


def local_variants(registry: Any, model: str) -> dict[str, Callable[[], Any]]:
    from strato import Client, InferRequest, Local

    local = Local(registry, threads=1)
    client = Client(edge=local)
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    client.predict(model, x)
    engine: Any = local.engine(model)
    session, names, feed = engine._session, engine._output_names, {"input": x}
    return {
        "raw session.run": lambda: session.run(names, feed),
        "Engine.infer": lambda: engine.infer(feed),
        "Local.infer": lambda: local.infer(InferRequest(model, feed)),
        "Client(Local).predict": lambda: client.predict(model, x),
    }


def edge_variants(url: str, model: str) -> dict[str, Callable[[], Any]]:
    from strato import Client, Edge
    from strato._codec import HEADER_LENGTH, encode_request

    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    body, length = encode_request({"input": x})
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(length)}
    raw = httpx.Client(base_url=url, timeout=10)
    path = f"/v2/models/{model}/infer"
    client = Client(edge=Edge(url))
    client.predict(model, x)

    def raw_post() -> bytes:
        response = raw.post(path, content=body, headers=headers)
        response.raise_for_status()
        return response.content

    return {"raw httpx POST": raw_post, "Client(Edge).predict": lambda: client.predict(model, x)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_edge(store: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "STRATO_ORT_THREADS": "1"}
    args = [
        STRATO,
        "edge",
        "serve",
        "--store",
        store,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--max-batch-size",
        "1",
        "--threads",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"edge server did not start:\n{log.read_text()}")


def run(quick: bool) -> dict[str, Any]:
    rounds, local_calls, edge_calls = (7, 2000, 100) if quick else (21, 5000, 300)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}",
        "rounds": rounds,
        "load_average_before": round(os.getloadavg()[0], 2),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        registry = build_registry(Path(tmp))
        process, url = start_edge(registry.url, Path(tmp) / "edge.log")
        try:
            for name in ("mlp", "cnn"):
                model = f"bench-{name}"
                local = time_rounds(
                    local_variants(registry, model), rounds=rounds, calls=local_calls
                )
                edge = time_rounds(edge_variants(url, model), rounds=rounds, calls=edge_calls)
                results["models"][name] = {"local": local, "edge": edge}
        finally:
            process.terminate()
            process.wait(10)
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    for figures in results["models"].values():
        local, edge = figures["local"], figures["edge"]
        raw = local["raw session.run"]["median_us"]
        figures["local_added_us"] = local["Client(Local).predict"]["median_us"] - raw
        figures["local_added_min_us"] = (
            local["Client(Local).predict"]["min_us"] - local["raw session.run"]["min_us"]
        )
        figures["local_ratio"] = local["Client(Local).predict"]["median_us"] / raw
        figures["client_layer_us"] = (
            local["Client(Local).predict"]["median_us"] - local["Local.infer"]["median_us"]
        )
        figures["validation_us"] = local["Engine.infer"]["median_us"] - raw
        figures["edge_ratio"] = (
            edge["Client(Edge).predict"]["median_us"] / edge["raw httpx POST"]["median_us"]
        )
    return results


LOCAL_MODELS = ("mlp", "cnn")


def worker(calls: int) -> None:
    """`--worker`: build a registry with the strato on PYTHONPATH, then time one round of the
    in-process variants per line read from stdin, answering a JSON line of µs per call."""
    with tempfile.TemporaryDirectory() as tmp:
        registry = build_registry(Path(tmp))
        variants = {m: local_variants(registry, f"bench-{m}") for m in LOCAL_MODELS}
        for fns in variants.values():
            time_rounds(fns, rounds=1, calls=calls)  # warm up
        clock = time.perf_counter
        for _ in sys.stdin:
            answer: dict[str, dict[str, float]] = {}
            for model, fns in variants.items():
                answer[model] = {}
                for name, fn in fns.items():
                    start = clock()
                    for _ in range(calls):
                        fn()
                    answer[model][name] = (clock() - start) / calls * 1e6
            print(json.dumps(answer), flush=True)


def against(ref: str, *, rounds: int, calls: int) -> dict[str, Any]:
    """The in-process layers of this tree and of `ref`, measured in alternating rounds."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "tree"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=repo, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)
        trees = {"this tree": repo, ref: baseline}
        workers = {}
        for label, tree in trees.items():
            path = os.pathsep.join(str(tree / d) for d in ("sdk", "edge", "training", "lambda"))
            workers[label] = subprocess.Popen(
                [sys.executable, __file__, "--worker", "--calls", str(calls)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": path, "STRATO_ORT_THREADS": "1"},
            )
        samples: dict[str, list[dict[str, dict[str, float]]]] = {label: [] for label in trees}
        try:
            for _ in range(rounds):
                for label, process in workers.items():
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write("round\n")
                    process.stdin.flush()
                    samples[label].append(json.loads(process.stdout.readline()))
        finally:
            for process in workers.values():
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(60)
    return {"ref": ref, "rounds": rounds, "trees": summarize(samples)}


def summarize(samples: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """Median and min per variant, and what Client(Local) adds over session.run."""
    out: dict[str, Any] = {}
    for label, rounds in samples.items():
        out[label] = {}
        for model in LOCAL_MODELS:
            figures = {
                name: {
                    "median_us": float(np.median([r[model][name] for r in rounds])),
                    "min_us": float(np.min([r[model][name] for r in rounds])),
                }
                for name in rounds[0][model]
            }
            raw, client = figures["raw session.run"], figures["Client(Local).predict"]
            figures["added"] = {
                "median_us": client["median_us"] - raw["median_us"],
                "min_us": client["min_us"] - raw["min_us"],
            }
            out[label][model] = figures
    return out


def against_markdown(comparison: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Against `{comparison['ref']}` ({comparison['rounds']} alternating rounds, µs per call,"
        " median / min)",
        "",
        "| tree | model | raw session.run | Engine.infer | Local.infer | Client(Local) | added |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, models in comparison["trees"].items():
        for model, f in models.items():
            cells = [
                f"{f[k]['median_us']:.1f} / {f[k]['min_us']:.1f}"
                for k in (
                    "raw session.run",
                    "Engine.infer",
                    "Local.infer",
                    "Client(Local).predict",
                    "added",
                )
            ]
            lines.append(f"| {label} | {model} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# SDK overhead at batch 1",
        "",
        f"{results['machine']}; median of {results['rounds']} interleaved rounds (µs per call); "
        f"1-min load average {results['load_average_before']} → {results['load_average_after']} "
        "(other work shares these cores: compare ratios within one run).",
        "",
        "| model | raw session.run | Engine.infer | Local.infer | Client(Local) | added | ratio | raw POST | Client(Edge) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in results["models"].items():
        local, edge = figures["local"], figures["edge"]
        lines.append(
            f"| {name} | {local['raw session.run']['median_us']:.1f} | {local['Engine.infer']['median_us']:.1f} "
            f"| {local['Local.infer']['median_us']:.1f} | {local['Client(Local).predict']['median_us']:.1f} "
            f"| {figures['local_added_us']:.1f} | {figures['local_ratio']:.2f}x "
            f"| {edge['raw httpx POST']['median_us']:.0f} | {edge['Client(Edge).predict']['median_us']:.0f} "
            f"| {figures['edge_ratio']:.2f}x |"
        )
    lines += [
        "",
        "Targets: Client(Local) adds <= 3 µs (<= 1.25x MLP, <= 1.10x CNN); Client(Edge) <= 1.20x raw POST.",
        "`added` splits into the engine's input validation (dtype, shape, NaN/Inf: `Engine.infer` - raw),",
        "the `Local` transport, and the client's routing layer (`Client(Local)` - `Local.infer`):",
        "",
    ]
    for name, figures in results["models"].items():
        lines.append(
            f"- {name}: validation {figures['validation_us']:.1f} µs, client routing layer {figures['client_layer_us']:.1f} µs"
            f" (added, min over rounds: {figures['local_added_min_us']:.1f} µs)"
        )
    if "against" in results:
        lines += against_markdown(results["against"])
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results["models"])
    for axis, (kind, variants) in zip(
        axes,
        [
            ("local", ["raw session.run", "Engine.infer", "Local.infer", "Client(Local).predict"]),
            ("edge", ["raw httpx POST", "Client(Edge).predict"]),
        ],
        strict=True,
    ):
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            values = [results["models"][n][kind][variant]["median_us"] for n in names]
            axis.bar(np.arange(len(names)) + i * width, values, width, label=variant)
        axis.set_xticks(np.arange(len(names)) + width * (len(variants) - 1) / 2, names)
        axis.set_ylabel("µs per call (batch 1)")
        axis.set_title("in process" if kind == "local" else "over HTTP to strato edge serve")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--against", metavar="REF", help="also compare with this git commit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=2000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.calls)
        return
    results = run(args.quick)
    if args.against:
        rounds = 9 if args.quick else 25
        results["against"] = against(args.against, rounds=rounds, calls=2000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sdk_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "sdk_overhead.md").write_text(markdown(results))
    chart(results, RESULTS / "sdk_overhead.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
