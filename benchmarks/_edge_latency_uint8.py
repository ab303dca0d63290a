"""The uint8 section of benchmarks/edge_latency.py: the 3x224x224 image model as float32 NCHW
and as its uint8 NHWC-baked variant (`strato_training.graph.bake_preprocessing` on the float
model's ONNX, same weights), both served by the same edge daemon and by `strato cloud local`.

The float request carries `pixels / 255` in NCHW, which is exactly what the baked graph computes
from the uint8 NHWC pixels, so both models answer the same; `check_parity` asserts it before
anything is timed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

FLOAT, UINT8 = "image", "image-uint8"
FUNCTION = "strato-infer"
GOALS = {"size": 0.25, "latency": 1.0}
EDGE = "Client(Edge) TCP"
LAMBDA = "Client(cloud=Lambda) → strato cloud local"


def build_uint8_model(root: Path) -> dict[str, np.ndarray]:
    """Bake uint8 NHWC → /255 → NCHW into the float image model (root/src-image) and publish
    it as `image-uint8`; returns the batch-1 input of each model, the same pixels."""
    import onnx
    from strato import Registry, TensorSpec, make_bundle
    from strato_training.graph import Preprocessing, bake_preprocessing

    recipe = Preprocessing(layout="NHWC", dtype="uint8", scale=1 / 255)
    model = onnx.load(str(root / "src-image" / "model.onnx"))
    baked, wire = bake_preprocessing(model, recipe)
    source = root / "src-image-uint8"
    source.mkdir(parents=True)
    onnx.save(baked, str(source / "model.onnx"))
    bundle = make_bundle(
        source,
        name=UINT8,
        version="1",
        inputs=[TensorSpec(wire.name, wire.datatype, wire.shape)],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(str(i) for i in range(10)),
        opset=17,
    )
    Registry(root / "registry").publish(bundle, alias="prod")
    pixels = np.random.default_rng(3).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    return {UINT8: pixels, FLOAT: recipe.apply(pixels)}


def start_emulators(
    root: Path, log: Any, free_port: Callable[[], int], wanted: bool = True
) -> dict[str, Any]:
    """One `strato cloud local` per model (it serves one): model -> (process, port)."""
    if not wanted:
        return {}
    strato = str(Path(sys.executable).with_name("strato"))
    out: dict[str, Any] = {}
    for model in (FLOAT, UINT8):
        port = free_port()
        argv = [
            strato, "cloud", "local", f"{model}@prod", "--registry", str(root / "registry"),
            "--port", str(port), "--function-name", FUNCTION, "--quiet",
        ]  # fmt: skip
        out[model] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), port)
    return out


def _lambda_client(port: int, sizes: list[int]) -> Any:
    """A boto3 Lambda client on the emulator that records each invoke payload's bytes."""
    import boto3

    client = boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )

    def record(request: Any, **_: Any) -> None:
        sizes.append(len(request.body or b""))

    client.meta.events.register("before-send.lambda.Invoke", record)
    return client


def clients(
    edge_url: str, emulators: dict[str, Any] | None, inputs: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[int]]]:
    """(edge clients, Lambda clients, invoke payload sizes); each client name -> (call, close)."""
    from strato import Client, Edge, Lambda

    edge: dict[str, Any] = {}
    cloud: dict[str, Any] = {}
    sizes: dict[str, list[int]] = {}
    for model, x in inputs.items():
        tcp = Client(edge=Edge(edge_url))
        edge[model] = (_caller(tcp, model, x), tcp.close)
        if emulators is not None:
            sizes[model] = []
            transport = Lambda(FUNCTION, client=_lambda_client(emulators[model][1], sizes[model]))
            lam = Client(cloud=transport)
            cloud[model] = (_caller(lam, model, x), lam.close)
    return edge, cloud, sizes


def _caller(client: Any, model: str, x: np.ndarray) -> Callable[[], Any]:
    return lambda: client.predict(model, x)


def check_parity(edge: dict[str, Any], cloud: dict[str, Any]) -> float:
    """Largest |float - uint8| logit on the same pixels, over every path; raises above 1e-4."""
    worst = 0.0
    for paths in (edge, cloud):
        if not paths:
            continue
        a, b = (paths[m][0]().output for m in (FLOAT, UINT8))
        worst = max(worst, float(np.abs(a - b).max()))
    if worst > 1e-4:
        raise RuntimeError(f"the uint8 model disagrees with the float model by {worst}")
    return worst


def body_bytes(edge_url: str, inputs: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Tensor bytes and the binary OIP request body per model."""
    from strato_edge.bench import build_request

    out = {}
    for model, x in inputs.items():
        path = f"/v2/models/{model}/infer"
        _, _, request = build_request(edge_url, path, {"input": x}, binary=True)
        out[model] = {"tensor": int(x.nbytes), "body": len(request.partition(b"\r\n\r\n")[2])}
    return out


def section(
    bytes_: dict[str, dict[str, int]],
    edge: dict[str, Any],
    cloud: dict[str, Any] | None,
    sizes: dict[str, list[int]],
) -> dict[str, Any]:
    """The section's JSON: bytes, latency per path and model, ratios uint8 / float."""
    paths = {EDGE: edge, **({LAMBDA: cloud} if cloud else {})}
    ratios: dict[str, Any] = {
        "tensor_bytes": bytes_[UINT8]["tensor"] / bytes_[FLOAT]["tensor"],
        "body_bytes": bytes_[UINT8]["body"] / bytes_[FLOAT]["body"],
    }
    if sizes:
        payload = {m: max(s) for m, s in sizes.items()}
        ratios["invoke_payload_bytes"] = payload[UINT8] / payload[FLOAT]
        bytes_ = {m: {**b, "invoke_payload": payload[m]} for m, b in bytes_.items()}
    for path, stats in paths.items():
        for q in ("p50_us", "p99_us"):
            ratios[f"{path} {q}"] = stats[UINT8][q] / stats[FLOAT][q]
    return {"goals": GOALS, "bytes": bytes_, "latency": paths, "ratios": ratios}


def run_section(
    edge_url: str,
    emulators: dict[str, Any] | None,
    inputs: dict[str, np.ndarray],
    measure: Callable[[dict[str, Any]], dict[str, Any]],
    cloud_calls: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Parity first, then float and uint8 interleaved per path; returns `section(...)`."""
    edge, cloud, sizes = clients(edge_url, emulators, inputs)
    try:
        worst = check_parity(edge, cloud)
        edge_stats = measure(edge)
        cloud_stats = cloud_calls(cloud) if cloud else None
    finally:
        for _, close in [*edge.values(), *cloud.values()]:
            close()
    out = section(body_bytes(edge_url, inputs), edge_stats, cloud_stats, sizes)
    out["max_abs_logit_diff"] = worst
    for path, stats in out["latency"].items():
        for model, s in stats.items():
            print(f"{model:12s} {path:44s} p50 {s['p50_us']:8.1f}  p99 {s['p99_us']:8.1f} µs")
    return out


def headline_rows(report: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """(metric, value, goal, at most) rows for REPORT.md's headline; none without the section."""
    if "uint8" not in report:
        return []
    r = report["uint8"]["ratios"]
    rows = [
        ("uint8 NHWC / float32 NCHW image, tensor bytes", r["tensor_bytes"], GOALS["size"]),
        ("uint8 / float32 image, Client(Edge) b1 p50", r[f"{EDGE} p50_us"], GOALS["latency"]),
    ]
    if f"{LAMBDA} p50_us" in r:
        lam = r[f"{LAMBDA} p50_us"]
        rows.append(("uint8 / float32 image, Client(Lambda emulator) b1 p50", lam, 1.0))
    return [(metric, value, goal, True) for metric, value, goal in rows]
