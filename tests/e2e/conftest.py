"""End-to-end fixtures: real `strato edge serve` and `strato cloud local` subprocesses, a small
registry of tiny models, and (for the cascade) digits models trained here in seconds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import support
from strato import Registry
from support.servers import Proc, cloud_emulator, free_port

for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder registry (the edge's store) holding tiny:1, alias prod."""
    root = tmp_path_factory.mktemp("e2e-tiny")
    registry = Registry(root / "registry")
    registry.publish(support.build_tiny_bundle(root / "v1", version="1"), alias="prod")
    return Path(registry.url)


@pytest.fixture(scope="session")
def tiny_cloud(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """`strato cloud local` serving tiny@prod (the same model as the edge)."""
    log = tmp_path_factory.mktemp("e2e-cloud") / "cloud.log"
    proc = cloud_emulator(f"{tiny_store}/tiny@prod", free_port(), log).start()
    yield proc
    proc.stop()


@dataclass
class Digits:
    edge_store: Path  # digits:1 (MLP, 3 epochs) and digits:2 (the same, calibrated)
    cloud_bundle: Path  # digits:1 trained as the small CNN: the bigger model in the cloud
    calibration: dict[str, Any]
    x_test: Any
    y_test: Any


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """A weak edge model (calibrated) and a stronger cloud model, trained on digits here."""
    pipeline = pytest.importorskip("strato_training.pipeline")
    from strato_training.optimize import calibrate_bundle
    from strato_training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("e2e-digits")
    edge_registry = Registry(root / "edge")
    edge = pipeline.run_spine(
        pipeline.QuickstartConfig(
            workdir=root / "edge-run",
            name="digits",
            train=TrainConfig(epochs=3, patience=0, threads=1),
            progress=False,
        ),
        edge_registry,
    )
    _, calibrated = calibrate_bundle(edge_registry, edge.published.ref, edge.dataset)
    cloud_registry = Registry(root / "cloud")
    cloud = pipeline.run_spine(
        pipeline.QuickstartConfig(
            workdir=root / "cloud-run",
            name="digits",
            train=TrainConfig(model="cnn", epochs=8, threads=1),
            progress=False,
        ),
        cloud_registry,
    )
    return Digits(
        edge_store=Path(edge_registry.url),
        cloud_bundle=Path(cloud_registry.url) / "digits" / str(cloud.published.ref.version),
        calibration=calibrated["calibration"],
        x_test=edge.dataset.test.x,
        y_test=edge.dataset.test.y,
    )
