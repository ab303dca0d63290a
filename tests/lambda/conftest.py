"""Fixtures for the cloud tier: real API Gateway v2 events, a Lambda context, moto S3."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from strato import Bundle

EVENTS = Path(__file__).parent / "events"


def _root_helpers() -> Any:
    """The shared test helpers (tests/support: build_tiny_bundle, free_port)."""
    import support

    return support


@pytest.fixture(scope="session")
def root_helpers() -> Any:
    return _root_helpers()


@pytest.fixture(autouse=True)
def _no_xray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


@pytest.fixture
def event() -> Callable[[str], dict[str, Any]]:
    """A fresh copy of `tests/lambda/events/<name>.json`."""
    cache: dict[str, dict[str, Any]] = {}

    def load(name: str) -> dict[str, Any]:
        if name not in cache:
            cache[name] = json.loads((EVENTS / f"{name}.json").read_text())
        return copy.deepcopy(cache[name])

    return load


@pytest.fixture
def lambda_context() -> Any:
    from strato_lambda.emulator import InvocationContext

    return InvocationContext(function_name="strato-infer", memory_limit_in_mb=1024)


@pytest.fixture
def function(tiny_bundle: Bundle, tmp_path: Path) -> Iterator[Any]:
    """`strato_lambda.app` configured to serve `tiny:1` from a bundle folder."""
    from strato_lambda import app
    from strato_lambda.settings import Settings

    app.configure(
        Settings.resolve(model_uri=str(tiny_bundle.root), cache_dir=str(tmp_path / "cache"))
    )
    yield app
    app.configure(Settings.resolve(model_uri=""), load=False)


@pytest.fixture
def moto_s3() -> Iterator[tuple[str, Any]]:
    """(endpoint_url, boto3 S3 client) of a moto server on 127.0.0.1 with bucket `models`."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    import urllib.request

    # One moto backend per process: start every test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    client.create_bucket(Bucket="models")
    try:
        yield endpoint, client
    finally:
        server.stop()
