"""Fixtures for the SDK tests: the stand-in cloud, a real edge daemon and cloud emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from strato import Registry
from support.servers import Proc, StandIn, cloud_emulator, edge_server, free_port

# boto3 must find credentials, and must never reach AWS: every client here gets an endpoint_url.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)


def make_registry(root: Path) -> Registry:
    """tiny:1 (prod) and tiny:2 in a folder registry."""
    helpers = support
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
def edge_daemon(
    session_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    """`strato edge serve` over the session registry (tiny:2 newest), as a subprocess."""
    log = tmp_path_factory.mktemp("edge-log") / "edge.log"
    proc = edge_server(
        Path(session_registry.url), free_port(), log, "--max-batch-size", "1"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def cloud_daemon(
    session_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    """`strato cloud local` serving tiny@prod, as a subprocess."""
    log = tmp_path_factory.mktemp("cloud-log") / "cloud.log"
    proc = cloud_emulator(f"{session_registry.url}/tiny@prod", free_port(), log).start()
    yield proc
    proc.stop()


@pytest.fixture
def edge_standin(tiny_registry: Registry) -> Iterator[StandIn]:
    """A stand-in edge daemon (OIP over HTTP) whose faults the test injects; serves tiny:2."""
    server = StandIn(tiny_registry, name="edge").start()
    yield server
    server.stop()


@pytest.fixture
def cloud_standin(tmp_path: Path) -> Iterator[StandIn]:
    """A stand-in Lambda serving tiny:1 with other weights (seed 5), so answers show their tier."""
    bundle = support.build_tiny_bundle(tmp_path / "cloud-bundle", version="1", seed=5)
    server = StandIn(bundle, name="cloud").start()
    yield server
    server.stop()
