"""Fixtures for the SDK tests: the stand-in cloud, a real edge daemon and cloud emulator."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from strato import Bundle, Registry, TensorSpec
from strato._bundle import make_bundle

sys.path.insert(0, str(Path(__file__).parent))
from sdk_servers import Proc, StandIn, cloud_emulator, edge_server  # noqa: E402

# boto3 must find credentials, and must never reach AWS: every client here gets an endpoint_url.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)


def root_conftest() -> ModuleType:
    """tests/conftest.py's helpers (imported by path: `conftest` is ambiguous across folders)."""
    spec = importlib.util.spec_from_file_location("strato_tests_root", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    return int(root_conftest().free_port())


def private_bundle(root: Path, *, name: str = "secret", version: str = "1") -> Bundle:
    """A tiny bundle whose manifest says `serving.cloud: never`."""
    helpers = root_conftest()
    root.mkdir(parents=True, exist_ok=True)
    helpers.write_tiny_onnx(root / "model.onnx", seed=3)
    return make_bundle(
        root,
        name=name,
        version=version,
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(str(i) for i in range(10)),
        opset=17,
        calibration={"temperature": 1.0, "cascade_threshold": 0.8},
        serving={"cloud": "never"},
    )


def make_registry(root: Path) -> Registry:
    """tiny:1 (prod) and tiny:2 in a folder registry."""
    helpers = root_conftest()
    registry = Registry(root / "registry")
    registry.publish(helpers.build_tiny_bundle(root / "v1", version="1", seed=0), alias="prod")
    registry.publish(helpers.build_tiny_bundle(root / "v2", version="2", seed=1))
    return registry


@pytest.fixture
def standin(tiny_registry: Registry) -> Iterator[StandIn]:
    """A stand-in cloud serving tiny (Lambda invoke, SageMaker runtime, OIP over HTTP)."""
    server = StandIn(tiny_registry).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(tmp_path_factory.mktemp("sdk-registry"))


@pytest.fixture(scope="session")
def edge_daemon(session_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """`strato edge serve` over the session registry (tiny:2 newest), as a subprocess."""
    log = tmp_path_factory.mktemp("edge-log") / "edge.log"
    proc = edge_server(Path(session_registry.url), free_port(), log, "--max-batch-size", "1").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def cloud_daemon(session_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """`strato cloud local` serving tiny@prod, as a subprocess."""
    log = tmp_path_factory.mktemp("cloud-log") / "cloud.log"
    proc = cloud_emulator(f"{session_registry.url}/tiny@prod", free_port(), log).start()
    yield proc
    proc.stop()
