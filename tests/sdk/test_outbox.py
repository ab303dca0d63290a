"""The offline outbox: durable while every tier is down, replayed exactly once by key."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from strato import (
    Client,
    ConfigError,
    Edge,
    InvalidInput,
    Lambda,
    Prediction,
    Queued,
    Retry,
    Unavailable,
)
from support.servers import free_port

pytestmark = pytest.mark.timeout(60)

FAST = Retry(attempts=1)


def offline_client(outbox) -> Client:
    dead_edge = Edge(f"http://127.0.0.1:{free_port()}")
    dead_cloud = Lambda("strato-infer", endpoint_url=f"http://127.0.0.1:{free_port()}")
    return Client(edge=dead_edge, cloud=dead_cloud, retry=FAST, outbox=outbox)


def online_client(outbox, edge_standin, cloud_standin) -> Client:
    cloud = Lambda("strato-infer", endpoint_url=cloud_standin.url)
    return Client(edge=Edge(edge_standin.url), cloud=cloud, retry=FAST, outbox=outbox)


def images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(count)]


def test_requests_wait_durably_and_are_answered_once(tmp_path, edge_standin, cloud_standin):
    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    queued = [offline.submit("tiny", x, key=f"req-{i}") for i, x in enumerate(images(6))]
    assert all(isinstance(q, Queued) for q in queued)
    assert offline.submit("tiny", images(1)[0], key="req-0") == Queued(
        "req-0", "tiny"
    )  # same key: once
    with pytest.raises(Unavailable):
        offline.predict("tiny", images(1)[0])  # predict() never queues
    assert offline.outbox is not None and offline.outbox.pending() == 6
    assert offline.flush() == {}  # still down: nothing sent, nothing lost
    assert offline.outbox.pending() == 6
    offline.close()

    online = online_client(path, edge_standin, cloud_standin)  # a new process, the same file
    answered = online.flush()
    assert sorted(answered) == [f"req-{i}" for i in range(6)]
    assert all(isinstance(p, Prediction) and p.served_by == "edge" for p in answered.values())
    assert dict(edge_standin.seen_ids) == {f"req-{i}": 1 for i in range(6)}
    assert online.flush() == {}
    assert online.outbox is not None and online.outbox.counts() == {"done": 6}


def test_submit_answers_at_once_when_a_tier_is_up(tmp_path, edge_standin, cloud_standin):
    client = online_client(tmp_path / "outbox.sqlite", edge_standin, cloud_standin)
    result = client.submit("tiny", images(1)[0], key="now")
    assert isinstance(result, Prediction) and result.served_by == "edge"
    assert edge_standin.seen_ids["now"] == 1
    assert client.outbox is not None and client.outbox.counts() == {}


def test_bad_input_is_refused_not_queued(tmp_path, edge_standin, cloud_standin):
    client = online_client(tmp_path / "outbox.sqlite", edge_standin, cloud_standin)
    with pytest.raises(InvalidInput):
        client.submit("tiny", np.zeros((1, 1, 5, 5), np.float32))
    assert client.outbox is not None and client.outbox.pending() == 0


def test_two_flushers_send_each_request_once(tmp_path, edge_standin, cloud_standin):
    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    for i, x in enumerate(images(20)):
        offline.submit("tiny", x, key=f"k{i}")
    offline.close()
    flushers = [online_client(path, edge_standin, cloud_standin) for _ in range(2)]
    results: list[dict[str, Prediction]] = []
    for _ in range(4):  # two flushers at a time, five requests each per round
        threads = [
            threading.Thread(target=lambda c=c: results.append(c.flush(limit=5))) for c in flushers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    sent = [key for result in results for key in result]
    assert sorted(sent) == sorted(f"k{i}" for i in range(20))
    assert set(edge_standin.seen_ids.values()) == {1}


def test_outbox_is_opt_in(tiny_registry):
    from strato import Local

    client = Client(edge=Local(tiny_registry))
    with pytest.raises(ConfigError, match="outbox"):
        client.submit("tiny", images(1)[0])
