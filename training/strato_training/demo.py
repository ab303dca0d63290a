"""The demo's serving half: the quickstart continues onto the edge daemon and the cloud tier.

After training, optimizing and publishing, `make demo`:
1. pulls the optimized version into a device store (`strato edge pull`, sha256-verified) and
   serves it with `strato edge serve` on 127.0.0.1;
2. serves the fp32 version with the Lambda handler behind `strato cloud local`;
3. routes the test split through `strato.Client(edge=Edge(...), cloud=Lambda(http_url=...),
   policy=Cascade())` (the function's HTTP API front: no AWS credentials, no boto3 here) and
   reports where each call was answered and how well;
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError

if TYPE_CHECKING:
    from strato import ModelRef, Registry

    from strato_training.data import Dataset

__all__ = ["FUNCTION_NAME", "Service", "route", "serve_and_route", "serve_cloud", "serve_edge"]

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


Clock = Callable[[str, Callable[[], Any]], Any]
"""Runs one named step and times it (`pipeline._Clock.run`)."""


def _no_clock(name: str, step: Callable[[], Any]) -> Any:
    return step()


def serve_edge(registry_url: str, ref: str, workdir: Path) -> Service:
    """Pull `ref` into a device store (`strato edge pull`, sha256-verified) and serve it on
    127.0.0.1 (`strato edge serve`); returns the running service."""
    store = workdir / "edge-store"
    pulled = subprocess.run(
        [
            *_strato_command(),
            "edge",
            "pull",
            ref,
            "--registry",
            registry_url,
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
        workdir / "logs" / "edge.log",
    )
    service.wait_ready("/v2/health/ready")
    return service


def serve_cloud(registry_url: str, ref: str, workdir: Path) -> Service:
    """Serve `ref` with the Lambda handler behind `strato cloud local` (Invoke + HTTP API)."""
    port = _free_port()
    service = Service.start(
        "cloud",
        [
            "cloud",
            "local",
            "--model-uri",
            f"{registry_url}/{ref}",
            "--port",
            str(port),
            "--function-name",
            FUNCTION_NAME,
            "--quiet",
        ],
        f"http://127.0.0.1:{port}",
        workdir / "logs" / "cloud.log",
    )
    service.wait_ready("/v2/health/ready")
    return service


def serve_and_route(
    registry: Registry,
    *,
    edge_ref: ModelRef,
    cloud_ref: ModelRef,
    dataset: Dataset,
    workdir: Path,
    clock: Clock = _no_clock,
) -> dict[str, Any]:
    """Serve `edge_ref` on the edge daemon and `cloud_ref` on the Lambda emulator, route the
    test split through them, stop both whatever happens. Returns the `edge`, `cloud` and
    `routing` parts of the quickstart summary."""
    services: list[Service] = []
    try:
        edge = clock("serve-edge", lambda: serve_edge(registry.url, str(edge_ref), workdir))
        services.append(edge)
        cloud = clock("serve-cloud", lambda: serve_cloud(registry.url, str(cloud_ref), workdir))
        services.append(cloud)
        routing = clock("route", lambda: route(edge.url, cloud.url, edge_ref.name, dataset))
    finally:
        for service in services:
            service.stop()
    return {
        "edge": {"url": edge.url, "store": str(workdir / "edge-store"), "model": str(edge_ref)},
        "cloud": {"url": cloud.url, "function": FUNCTION_NAME, "model": str(cloud_ref)},
        "routing": routing,
    }


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


def route(edge_url: str, cloud_url: str, model: str, dataset: Dataset) -> dict[str, Any]:
    """Route the test split one call at a time through Client(edge, cloud, Cascade()); the
    cloud is reached through the function's HTTP API front (no AWS credentials needed)."""
    from strato import Client, Edge, Lambda, policies

    by_tier: dict[str, tuple[list[bool], list[float]]] = {"edge": ([], []), "cloud": ([], [])}
    with Client(
        edge=Edge(edge_url), cloud=Lambda(http_url=cloud_url), policy=policies.Cascade()
    ) as client:
        for x, y in zip(dataset.test.x, dataset.test.y, strict=True):
            prediction = client.predict(model, x[None])
            tier = "cloud" if prediction.served_by == "lambda" else "edge"
            by_tier[tier][0].append(int(prediction.output.argmax()) == int(y))
            by_tier[tier][1].append(prediction.latency_ms)
        calibration = client.metadata(model).get("parameters", {}).get("calibration", {})
    with Client(edge=Edge(edge_url)) as client:
        logits = client.predict(model, dataset.test.x).output  # the edge model alone
    total = len(dataset.test.y)
    everything = by_tier["edge"][0] + by_tier["cloud"][0]
    return {
        "policy": "cascade",
        "threshold": calibration.get("cascade_threshold"),
        "expected_edge_share": calibration.get("edge_share"),
        "samples": total,
        "edge": _tier_row(*by_tier["edge"], total),
        "cloud": _tier_row(*by_tier["cloud"], total),
        "cascade_accuracy": round(float(np.mean(everything)), 4),
        "edge_alone_accuracy": round(float((logits.argmax(axis=1) == dataset.test.y).mean()), 4),
    }
