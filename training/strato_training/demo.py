"""The demo's serving half: the quickstart continues onto the edge daemon and the cloud tier.

After training, optimizing and publishing, `make demo`:
1. pulls the optimized version into a device store (`strato edge pull`, sha256-verified) and
   serves it with `strato edge serve` on 127.0.0.1;
2. serves the fp32 version with the Lambda handler behind `strato cloud local` (the Invoke API);
3. routes the test split through `strato.Client(edge=Edge(...), cloud=Lambda(...),
   policy=Cascade())` and reports where each call was answered and how well;
4. stops both servers, whatever happened.

The servers run as subprocesses of the `strato` command, so this module imports neither
`strato_edge` nor `strato_lambda`: packages depend on `strato` only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError

if TYPE_CHECKING:
    from strato_training.data import Dataset
    from strato_training.pipeline import QuickstartContext

__all__ = ["SERVING_STEPS", "Service", "route_step", "serve_cloud_step", "serve_edge_step"]

FUNCTION_NAME = "strato-infer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _strato_command() -> list[str]:
    found = shutil.which("strato", path=str(Path(sys.executable).parent)) or shutil.which("strato")
    return [found] if found else [sys.executable, "-m", "strato"]


@dataclass
class Service:
    """A server the demo started: its process, its log file, and how to know it is up."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] = field(repr=False)

    @classmethod
    def start(cls, name: str, args: list[str], url: str, log_path: Path) -> Service:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [*_strato_command(), *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        return cls(name, url, process, log_path, log)

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(
                    f"{self.name} exited with {self.process.returncode}; log {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ConfigError(f"{self.name} not ready after {timeout:.0f} s; log {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _services(ctx: QuickstartContext) -> dict[str, Service]:
    services: dict[str, Service] = ctx.services
    return services


def stop_services(ctx: QuickstartContext) -> None:
    """Stop every server the demo started (called from a `finally`)."""
    for service in _services(ctx).values():
        service.stop()
    ctx.services.clear()


def serve_edge_step(ctx: QuickstartContext) -> None:
    """Pull the optimized version into a device store and serve it on 127.0.0.1."""
    ref = ctx.need("ref")
    store = ctx.workdir / "edge-store"
    pulled = subprocess.run(
        [
            *_strato_command(),
            "edge",
            "pull",
            str(ref),
            "--registry",
            ctx.registry.url,
            "--store",
            str(store),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if pulled.returncode != 0:
        raise ConfigError(f"strato edge pull failed: {pulled.stderr or pulled.stdout}")
    port = _free_port()
    service = Service.start(
        "edge",
        ["edge", "serve", "--store", str(store), "--port", str(port)],
        f"http://127.0.0.1:{port}",
        ctx.workdir / "logs" / "edge.log",
    )
    _services(ctx)["edge"] = service
    service.wait_ready("/v2/health/ready")
    ctx.summary["edge"] = {"url": service.url, "store": str(store), "model": str(ref)}


def serve_cloud_step(ctx: QuickstartContext) -> None:
    """Serve the fp32 version with the Lambda handler behind the local Invoke API emulator."""
    fp32 = ctx.summary.get("optimize", {}).get("from") or str(ctx.need("ref"))
    port = _free_port()
    service = Service.start(
        "cloud",
        [
            "cloud",
            "local",
            "--model-uri",
            f"{ctx.registry.url}/{fp32}",
            "--port",
            str(port),
            "--function-name",
            FUNCTION_NAME,
            "--quiet",
        ],
        f"http://127.0.0.1:{port}",
        ctx.workdir / "logs" / "cloud.log",
    )
    _services(ctx)["cloud"] = service
    service.wait_ready("/v2/health/ready")
    ctx.summary["cloud"] = {"url": service.url, "function": FUNCTION_NAME, "model": fp32}


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
    }


def _tier_row(correct: list[bool], latencies: list[float], total: int) -> dict[str, Any]:
    return {
        "calls": len(correct),
        "share": round(len(correct) / total, 4) if total else 0.0,
        "accuracy": round(float(np.mean(correct)), 4) if correct else None,
        **_percentiles(latencies),
    }


def route_step(ctx: QuickstartContext) -> None:
    """Route the test split one call at a time through Client(edge, cloud, Cascade())."""
    import boto3
    from strato import Client, Edge, Lambda, policies

    dataset: Dataset = ctx.need("dataset")
    services = _services(ctx)
    lambda_client = boto3.client(
        "lambda",
        endpoint_url=services["cloud"].url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    model = ctx.name
    by_tier: dict[str, tuple[list[bool], list[float]]] = {"edge": ([], []), "cloud": ([], [])}
    edge_alone: list[bool] = []
    with Client(
        edge=Edge(services["edge"].url),
        cloud=Lambda(FUNCTION_NAME, client=lambda_client),
        policy=policies.Cascade(),
    ) as client:
        for x, y in zip(dataset.test.x, dataset.test.y, strict=True):
            prediction = client.predict(model, x[None])
            tier = "cloud" if prediction.served_by == "lambda" else "edge"
            correct = int(prediction.output.argmax()) == int(y)
            by_tier[tier][0].append(correct)
            by_tier[tier][1].append(prediction.latency_ms)
            if tier == "edge":
                edge_alone.append(correct)
        calibration = client.metadata(model).get("parameters", {}).get("calibration", {})
    total = len(dataset.test.y)
    everything = by_tier["edge"][0] + by_tier["cloud"][0]
    ctx.summary["routing"] = {
        "policy": "cascade",
        "threshold": calibration.get("cascade_threshold"),
        "expected_edge_share": calibration.get("edge_share"),
        "samples": total,
        "edge": _tier_row(*by_tier["edge"], total),
        "cloud": _tier_row(*by_tier["cloud"], total),
        "cascade_accuracy": round(float(np.mean(everything)), 4),
    }
    _edge_only_accuracy(ctx, dataset)


def _edge_only_accuracy(ctx: QuickstartContext, dataset: Dataset) -> None:
    """The edge model alone on the whole split, to show what the cascade buys."""
    from strato import Client, Edge

    with Client(edge=Edge(_services(ctx)["edge"].url)) as client:
        logits = client.predict(ctx.name, dataset.test.x).output
    ctx.summary["routing"]["edge_alone_accuracy"] = round(
        float((logits.argmax(axis=1) == dataset.test.y).mean()), 4
    )


SERVING_STEPS = (
    (
        "serve-edge",
        "pull the optimized bundle into a device store, serve it (strato edge serve)",
        serve_edge_step,
    ),
    (
        "serve-cloud",
        "serve the fp32 bundle with the Lambda handler (strato cloud local)",
        serve_cloud_step,
    ),
    ("route", "route the test split through Client(Edge, Lambda, Cascade())", route_step),
)
