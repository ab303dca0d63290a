"""Model sync: S3 (moto's server + real boto3) and folder registries into a device store;
corrupt and interrupted pulls; hot swap under load; rollback; keep-K pruning."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from strato import Registry
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine
from strato._errors import IntegrityError, ModelNotFound, StratoError
from strato_edge.sync import pull, rollback, store_status
from support import build_tiny_bundle

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    import boto3

    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"models-{uuid.uuid4().hex[:12]}"  # moto's backend is shared by every server
    client.create_bucket(Bucket=bucket)
    client.endpoint = endpoint
    client.bucket = bucket
    yield client
    server.stop()


def _predict(http, x, path="/v2/models/tiny/infer"):
    body, length = encode_request({"input": x})
    response = http.post(path, content=body, headers={HEADER_LENGTH: str(length)})
    assert response.status_code == 200, response.text
    decoded = decode_response(response.content, header_length=int(response.headers[HEADER_LENGTH]))
    return response.headers["X-Strato-Model-Version"], decoded.outputs["logits"]


def _wait_for_version(http, x, version, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served, _ = _predict(http, x)
        if served == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"server never switched to version {version}")


def _leftovers(store: Path) -> list[str]:
    # staging folders; the alias lock file is meant to stay
    return sorted(
        p.name
        for p in (store / "tiny").iterdir()
        if p.name.startswith(".") and not p.name.endswith(".lock")
    )


def test_s3_publish_pull_serve_and_refuse_corrupt_or_partial_uploads(
    s3, tmp_path, edge_server, digit_batch
):
    source = Registry(f"s3://{s3.bucket}/strato", s3_client=s3)
    source.publish(build_tiny_bundle(tmp_path / "b1", version="1", seed=0), alias="prod")
    store = tmp_path / "device"
    first = pull("tiny@prod", source=source, store=store)
    assert (first.version, first.downloaded, first.previous) == ("1", True, None)
    server = edge_server(store)
    v1 = load_engine(Registry(store).open("tiny:1")).infer({"input": digit_batch})["logits"]
    with server.client() as http:
        served, logits = _predict(http, digit_batch)
        assert served == "1"
        np.testing.assert_allclose(logits, v1, rtol=1e-5, atol=1e-5)

        # v2 reaches S3 with a corrupted model file: refused, v1 keeps serving
        source.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
        s3.put_object(Bucket=s3.bucket, Key="strato/tiny/2/model.onnx", Body=b"not the model")
        source.promote("tiny", "2", "prod")
        with pytest.raises(IntegrityError, match="sha256"):
            pull("tiny@prod", source=source, store=store)
        assert Registry(store).versions("tiny") == ["1"]
        assert Registry(store).aliases("tiny") == {"current": "1"}
        assert _leftovers(store) == []

        # v3 upload interrupted (its model object never arrived): nothing half-installed
        source.publish(build_tiny_bundle(tmp_path / "b3", version="3", seed=2))
        s3.delete_object(Bucket=s3.bucket, Key="strato/tiny/3/model.onnx")
        source.promote("tiny", "3", "prod")
        with pytest.raises(ModelNotFound):
            pull("tiny@prod", source=source, store=store)
        assert not (store / "tiny" / "3").exists() and _leftovers(store) == []
        time.sleep(0.3)  # several store checks later, still v1
        served, logits = _predict(http, digit_batch)
        assert served == "1"
        np.testing.assert_allclose(logits, v1, rtol=1e-5, atol=1e-5)

        # a good v4: pulled, verified, hot-swapped
        source.publish(build_tiny_bundle(tmp_path / "b4", version="4", seed=3))
        source.promote("tiny", "4", "prod")
        result = pull("tiny@prod", source=source, store=store)
        assert (result.version, result.previous) == ("4", "1")
        _wait_for_version(http, digit_batch, "4")
        v4 = load_engine(Registry(store).open("tiny:4")).infer({"input": digit_batch})["logits"]
        np.testing.assert_allclose(_predict(http, digit_batch)[1], v4, rtol=1e-5, atol=1e-5)


def test_cli_pull_from_s3_with_endpoint_option(s3, tmp_path):
    from strato._cli import app
    from typer.testing import CliRunner

    source = Registry(f"s3://{s3.bucket}/strato", s3_client=s3)
    source.publish(build_tiny_bundle(tmp_path / "b1"), alias="prod")
    store = tmp_path / "device"
    args = [
        "edge",
        "pull",
        "tiny@prod",
        "--registry",
        f"s3://{s3.bucket}/strato",
        "--store",
        str(store),
    ]
    result = CliRunner().invoke(app, [*args, "--s3-endpoint", s3.endpoint, "--json"])
    assert result.exit_code == 0, result.output
    assert '"version": "1"' in result.output
    assert Registry(store).aliases("tiny") == {"current": "1"}


def test_hot_swap_under_load_fails_no_request(tmp_path, edge_server, digit_batch):
    source = Registry(tmp_path / "registry")
    source.publish(build_tiny_bundle(tmp_path / "b1", version="1", seed=0), alias="prod")
    source.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
    store = tmp_path / "device"
    pull("tiny@prod", source=source, store=store)
    server = edge_server(store, watch_interval_s=0.05)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with server.client() as http:
            while not stop.is_set():
                try:
                    seen.append(_predict(http, digit_batch)[0])
                except Exception as exc:  # any failure at all is what this test counts
                    failures.append(repr(exc))

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(0.3)
        source.promote("tiny", "2", "prod")
        pull("tiny@prod", source=source, store=store)
        deadline = time.monotonic() + 20
        while "2" not in seen[-20:] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        rollback(store, "tiny")  # and back again, still under load
        deadline = time.monotonic() + 20
        while seen[-1] != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    assert failures == []
    assert "2" in seen
    assert seen[0] == "1" and seen[-1] == "1"
    first_two, last_two = seen.index("2"), len(seen) - 1 - seen[::-1].index("2")
    assert set(seen[first_two : last_two + 1]) <= {"1", "2"}
    assert len(seen) > 20


def test_keep_prunes_old_versions_but_never_aliased_ones(tmp_path):
    source = Registry(tmp_path / "registry")
    store = tmp_path / "device"
    for version in ("1", "2", "3", "4", "5"):
        source.publish(
            build_tiny_bundle(tmp_path / f"b{version}", version=version, seed=int(version))
        )
    pull("tiny:1", source=source, store=store, keep=2)
    Registry(store).promote("tiny", "1", "prod")  # pinned by another alias
    for version in ("2", "3", "4"):
        pull(f"tiny:{version}", source=source, store=store, keep=2)
    result = pull("tiny:5", source=source, store=store, keep=2)
    assert result.removed == ("3",)
    assert Registry(store).versions("tiny") == ["1", "4", "5"]
    assert store_status(store)[0]["serving"] == "5"
    # rolling back to a pruned version is refused with a clear message
    rollback(store, "tiny")  # 5 -> 4
    with pytest.raises(StratoError, match="no longer installed"):
        rollback(store, "tiny")  # 4 -> 3: pruned


def test_pull_of_an_installed_version_only_moves_the_alias(tiny_registry, tmp_path):
    store = tmp_path / "device"
    assert pull("tiny:1", source=tiny_registry, store=store).downloaded
    assert pull("tiny:2", source=tiny_registry, store=store).downloaded
    rollback(store, "tiny", to="1")  # going below the highest served takes the operator
    again = pull("tiny:2", source=tiny_registry, store=store)
    assert (again.downloaded, again.previous, again.version) == (False, "1", "2")
    with pytest.raises(ModelNotFound):
        pull("tiny:9", source=tiny_registry, store=store)


def test_watch_follows_the_source_alias_and_the_server_swaps(tmp_path, edge_server, digit_batch):
    from strato_edge.sync import watch

    source = Registry(tmp_path / "registry")
    source.publish(build_tiny_bundle(tmp_path / "b1", version="1", seed=0), alias="prod")
    source.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
    store = tmp_path / "device"
    pulled: list[str] = []
    stop = threading.Event()
    agent = threading.Thread(
        target=watch,
        args=("tiny@prod",),
        kwargs={
            "source": source,
            "store": store,
            "interval_s": 0.05,
            "on_pull": lambda result: pulled.append(result.version),
            "should_stop": stop.is_set,
        },
    )
    agent.start()
    try:
        deadline = time.monotonic() + 20
        while not pulled and time.monotonic() < deadline:
            time.sleep(0.02)
        server = edge_server(store, watch_interval_s=0.05)
        with server.client() as http:
            assert _predict(http, digit_batch)[0] == "1"
            source.promote("tiny", "2", "prod")
            _wait_for_version(http, digit_batch, "2")
    finally:
        stop.set()
        agent.join(timeout=10)
    assert pulled == ["1", "2"]


def test_a_tampered_version_in_the_store_is_never_served(tmp_path, edge_server, digit_batch):
    """Files changed on the device after install: the sha256 check refuses them at load."""
    import shutil

    source = Registry(tmp_path / "registry")
    source.publish(build_tiny_bundle(tmp_path / "b1", version="1", seed=0))
    source.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
    store = tmp_path / "device"
    pull("tiny:1", source=source, store=store)
    shutil.copytree(source.store.root / "tiny" / "2", store / "tiny" / "2")
    (store / "tiny" / "2" / "model.onnx").write_bytes(b"tampered")
    server = edge_server(store, watch_interval_s=0.05)
    with server.client() as http:
        Registry(store).promote("tiny", "2", "current")
        time.sleep(0.4)
        assert _predict(http, digit_batch)[0] == "1"
        response = http.get("/v2/models/tiny/versions/2")
        assert response.status_code == 503
        assert "sha256" in response.json()["error"]


def test_connection_dropped_mid_pull_installs_nothing(s3, tmp_path):
    """The link dies while the model file downloads (after the manifest arrived)."""
    from botocore.exceptions import EndpointConnectionError

    source = Registry(f"s3://{s3.bucket}/strato", s3_client=s3)
    source.publish(build_tiny_bundle(tmp_path / "b1", version="1"), alias="prod")
    source.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
    store = tmp_path / "device"
    pull("tiny@prod", source=source, store=store)
    source.promote("tiny", "2", "prod")

    def drop(params, **kwargs):
        if params.get("url_path", "").endswith("/tiny/2/model.onnx"):
            raise EndpointConnectionError(endpoint_url=s3.endpoint)

    s3.meta.events.register("before-call.s3.GetObject", drop)
    try:
        with pytest.raises(StratoError):
            pull("tiny@prod", source=source, store=store)
    finally:
        s3.meta.events.unregister("before-call.s3.GetObject", drop)
    assert Registry(store).versions("tiny") == ["1"]
    assert Registry(store).aliases("tiny") == {"current": "1"}
    assert _leftovers(store) == []
    assert pull("tiny@prod", source=source, store=store).version == "2"  # the link is back
