"""Fixtures every test folder may use: tiny ONNX bundles built in the test, a local registry.

Folder-specific fixtures live in that folder's conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, Registry
from support import build_tiny_bundle


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Bundle:
    """A verified bundle `tiny:1` with a random-weight MLP (input 'input', output 'logits')."""
    return build_tiny_bundle(tmp_path / "bundle-src")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def tiny_registry(registry: Registry, tmp_path: Path) -> Registry:
    """A folder registry holding tiny:1 and tiny:2 (different weights), prod → 1."""
    registry.publish(build_tiny_bundle(tmp_path / "v1", version="1", seed=0), alias="prod")
    registry.publish(build_tiny_bundle(tmp_path / "v2", version="2", seed=1))
    return registry


@pytest.fixture
def digit_batch() -> np.ndarray:
    """Four 1x28x28 float32 images in [0, 1]."""
    return np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)


@pytest.fixture(autouse=True)
def _fresh_moto_state():
    """moto keeps its S3 state per process, shared by every ThreadedMotoServer: start clean."""
    yield
    import sys

    if "moto" in sys.modules:
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()


@pytest.fixture
def s3_client():
    """A real boto3 S3 client on a moto server at 127.0.0.1 (free port), stopped after the test."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
    finally:
        server.stop()
