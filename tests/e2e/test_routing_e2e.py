"""Hedging against a slowed edge, bad input, and the outbox, with the real daemons."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from strato import Client, Edge, InvalidInput, Lambda, Prediction, Queued, Retry, policies
from support.servers import DelayProxy, cloud_emulator, edge_server, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def tiny_edge(tmp_path, tiny_store):
    proc = edge_server(tiny_store, free_port(), tmp_path / "edge.log").start()
    yield proc
    proc.stop()


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 1, 28, 28), dtype=np.float32)


def test_hedging_answers_a_slowed_edge_within_the_deadline(tiny_edge, tiny_cloud):
    proxy = DelayProxy(int(tiny_edge.url.rsplit(":", 1)[1]))
    slo = policies.LatencySLO(deadline_ms=2000)  # hedge after the edge's learned p95
    try:
        client = Client(
            edge=Edge(proxy.url),
            cloud=Lambda("strato-infer", endpoint_url=tiny_cloud.url),
            policy=slo,
        )
        for _ in range(30):  # EdgeFirst: no hedging while the edge's latencies are learned
            assert client.predict("tiny", image(), policy=policies.EdgeFirst()).served_by == "edge"
        proxy.delay_s = 0.8  # the edge now takes 800 ms: far over its p95
        slowed = [client.predict("tiny", image()) for _ in range(3)]
        for pred in slowed:
            assert pred.served_by == "lambda"
            assert re.fullmatch(r"hedge after \d+ms: cloud won", pred.route_reason)
            assert pred.latency_ms < slo.deadline_ms
        proxy.delay_s = 0.0
        client.predict("tiny", image())  # drains the abandoned slow call's connection
    finally:
        proxy.close()


def test_bad_input_is_refused_by_the_edge_and_never_sent_to_the_cloud(tiny_edge, tiny_cloud):
    cloud_proxy = DelayProxy(int(tiny_cloud.url.rsplit(":", 1)[1]))
    try:
        client = Client(
            edge=Edge(tiny_edge.url), cloud=Lambda("strato-infer", endpoint_url=cloud_proxy.url)
        )
        with pytest.raises(InvalidInput, match="400"):
            client.predict("tiny", np.zeros((1, 1, 28, 27), np.float32))
        with pytest.raises(InvalidInput):
            client.predict("tiny", np.full((1, 1, 28, 28), np.nan, np.float32))
        assert cloud_proxy.chunks == 0
        assert client.predict("tiny", image()).served_by == "edge"
    finally:
        cloud_proxy.close()


def _answered(metrics: str, model: str) -> int:
    pattern = rf'strato_edge_requests_total\{{model="{model}",[^}}]*status="200"\}} (\d+)'
    return sum(int(count) for count in re.findall(pattern, metrics))


def test_outbox_answers_each_request_once_after_both_tiers_return(tmp_path, tiny_store):
    edge_port, cloud_port = free_port(), free_port()
    edge_url, cloud_url = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{cloud_port}"
    outbox = tmp_path / "outbox.sqlite"
    client = Client(
        edge=Edge(edge_url),
        cloud=Lambda("strato-infer", endpoint_url=cloud_url),
        retry=Retry(attempts=1),
        outbox=outbox,
    )
    queued = [client.submit("tiny", image(i), key=f"order-{i}") for i in range(12)]
    assert all(isinstance(q, Queued) for q in queued)
    assert client.flush() == {}  # still down
    edge = edge_server(tiny_store, edge_port, tmp_path / "edge.log").start()
    cloud = cloud_emulator(f"{tiny_store}/tiny@prod", cloud_port, tmp_path / "cloud.log").start()
    try:
        answered = client.flush()
        assert sorted(answered) == sorted(f"order-{i}" for i in range(12))
        assert all(isinstance(p, Prediction) for p in answered.values())
        assert client.flush() == {}
        assert client.outbox is not None and client.outbox.counts() == {"done": 12}
        metrics = httpx.get(f"{edge_url}/metrics").text
        assert _answered(metrics, "tiny") == 12  # none twice
    finally:
        client.close()
        edge.stop()
        cloud.stop()
