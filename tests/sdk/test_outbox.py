"""The offline outbox: durable while every tier is down, replayed exactly once by key."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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


# --- issue 10, item 9 and issue 15: poison messages, leases, exactly-once, no bad input -------


def test_bad_input_is_never_queued_even_when_every_tier_is_down(tmp_path):
    client = offline_client(tmp_path / "outbox.sqlite")
    bad = {
        "NaN": np.full((1, 4), np.nan, np.float32),
        "infinity": np.full((1, 4), np.inf, np.float64),
        "strings": np.array([["a", "b"]]),
        "objects": np.array([[object()]], dtype=object),
        "0-d": np.float32(1.0),
        "empty": np.zeros((0, 4), np.float32),
        "no inputs": {},
        "unnamed input": {"": np.zeros((1, 4), np.float32)},
    }
    for name, x in bad.items():
        with pytest.raises(InvalidInput):
            client.submit("tiny", x, key=f"bad-{name}")
    with pytest.raises(InvalidInput):
        client.submit("tiny", np.zeros((1, 4), np.float32), key="k" * 300)
    assert client.outbox is not None and client.outbox.counts() == {}
    client.close()


def _daemon(tmp_path, bundle_root):
    from support.servers import edge_server as edge_process

    proc = edge_process(bundle_root, free_port(), tmp_path / "edge.log")
    return proc.start()


def test_a_poison_message_is_retried_with_backoff_then_dead_lettered(tmp_path):
    """A request the edge answers 503 (ONNX Runtime runs out of memory on it) no longer blocks
    every later flush: the others are answered, it is retried, then dead-lettered."""
    from strato import FailedRequest, Outbox
    from support import build_poison_bundle

    daemon = _daemon(tmp_path, build_poison_bundle(tmp_path / "poison").root)
    try:
        path = tmp_path / "outbox.sqlite"
        offline = offline_client(path)
        offline.submit("poison", np.array([[1e7, 0, 0, 0]], np.float32), key="bad")
        for i in range(4):
            offline.submit("poison", np.full((1, 4), i / 10, np.float32), key=f"ok-{i}")
        offline.close()
        outbox = Outbox(path, backoff_s=0.5, max_attempts=3)
        online = Client(edge=Edge(daemon.url), retry=FAST, outbox=outbox)
        first = online.flush()
        assert sorted(first) == [f"ok-{i}" for i in range(4)]  # not blocked behind "bad"
        assert list(first.retrying) == ["bad"] and "503" in first.retrying["bad"]
        assert online.flush().retrying == {}  # backing off: not due yet
        tries, report = 1, first
        while "bad" not in report.failed and tries < 10:
            time.sleep(0.6 * 2 ** (tries - 1))
            report = online.flush()
            tries += "bad" in report.retrying or "bad" in report.failed
        assert tries == 3 and "ONNX Runtime failed" in report.failed["bad"]
        [dead] = outbox.failed()
        assert dead == FailedRequest("bad", "poison", "dead", dead.error, 3)
        assert online.flush() == {} and outbox.counts() == {"done": 4, "dead": 1}
        assert outbox.requeue("bad") and outbox.state("bad") == "pending"
        online.close()
    finally:
        daemon.stop()


def test_an_outage_charges_no_attempt(tmp_path):
    from strato import Outbox

    path = tmp_path / "outbox.sqlite"
    client = Client(
        edge=Edge(f"http://127.0.0.1:{free_port()}"),
        retry=FAST,
        outbox=Outbox(path, max_attempts=1),
    )
    client.submit("tiny", images(1)[0], key="waits")
    for _ in range(3):
        report = client.flush()
        assert report == {} and report.failed == {} and report.waiting == 1
    assert client.outbox is not None and client.outbox.counts() == {"pending": 1}
    client.close()


def test_a_slow_flush_keeps_its_lease(tmp_path, edge_standin, cloud_standin):
    """A batch that takes longer than the lease is not re-claimed (and sent twice) by a
    second flusher: the lease is renewed while the first one sends."""
    from strato import Outbox
    from support.servers import DelayProxy

    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    for i, x in enumerate(images(6)):
        offline.submit("tiny", x, key=f"slow-{i}")
    offline.close()
    proxy = DelayProxy(int(edge_standin.url.rsplit(":", 1)[1]))
    slow = Client(edge=Edge(proxy.url), retry=FAST, outbox=Outbox(path, lease_s=0.4))
    proxy.delay_s = 0.25  # six requests: 1.5 s and more, several leases long
    results: list[dict[str, Prediction]] = []
    worker = threading.Thread(target=lambda: results.append(slow.flush()))
    worker.start()
    time.sleep(1.0)  # the first lease would have run out twice by now
    fast = online_client(Outbox(path, lease_s=0.4), edge_standin, cloud_standin)
    second = fast.flush()
    worker.join(30)
    proxy.close()
    assert second == {}
    assert sorted(results[0]) == [f"slow-{i}" for i in range(6)]
    assert dict(edge_standin.seen_ids) == {f"slow-{i}": 1 for i in range(6)}


FLUSHER = """
import sys, time
from strato import Client, Edge, Retry
from strato import Outbox
url, path = sys.argv[1], sys.argv[2]
client = Client(edge=Edge(url, timeout=10), retry=Retry(attempts=1), outbox=Outbox(path, lease_s=1.0))
while client.outbox.pending():
    client.flush(limit=4)
    time.sleep(0.01)
print("flusher done", flush=True)
"""


def test_two_flusher_processes_one_sigkilled_run_each_request_exactly_once(tmp_path, tiny_registry):
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from strato import Outbox
    from support.servers import DelayProxy

    daemon = _daemon(tmp_path, Path(tiny_registry.url))
    keys = [f"once-{i}" for i in range(40)]
    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    for key, x in zip(keys, images(40), strict=True):
        offline.submit("tiny", x, key=key)
    offline.close()
    script = tmp_path / "flusher.py"
    script.write_text(FLUSHER)
    proxy = DelayProxy(int(daemon.url.rsplit(":", 1)[1]))
    proxy.delay_s = 0.05
    env = {**os.environ}
    logs = [(tmp_path / f"flusher-{n}.log").open("wb") for n in range(2)]
    doomed = subprocess.Popen(
        [sys.executable, str(script), proxy.url, str(path)], stdout=logs[0], stderr=logs[0], env=env
    )
    survivor = None
    try:
        outbox = Outbox(path)
        deadline = time.monotonic() + 60
        while outbox.counts().get("done", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        survivor = subprocess.Popen(
            [sys.executable, str(script), daemon.url, str(path)],
            stdout=logs[1],
            stderr=logs[1],
            env=env,
        )
        time.sleep(0.3)  # both flushing now
        doomed.send_signal(signal.SIGKILL)  # mid-flush: claimed rows, maybe a request on the wire
        doomed.wait(10)
        assert survivor.wait(90) == 0, (tmp_path / "flusher-1.log").read_text()
        assert outbox.counts() == {"done": 40}
        stats = httpx.get(f"{daemon.url}/v2/models/tiny/stats", timeout=10).json()
        runs = sum(int(entry["inference_count"]) for entry in stats["model_stats"])
        assert runs == 40, stats  # every request ran once, though some were sent twice
        outbox.close()
    finally:
        proxy.close()
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.kill()
        for log in logs:
            log.close()
        daemon.stop()


def test_a_poison_message_an_in_process_engine_fails_on_is_dead_lettered_too(tmp_path):
    """`Client(edge=Local(...))`: the engine's own failure is an `EngineError`, not a
    `TransportError`; it made `flush()` raise at that request, every time, so every later
    request waited behind it forever. It is charged and dead-lettered like a 503."""
    from strato import Local, Outbox
    from support import build_poison_bundle

    root = build_poison_bundle(tmp_path / "poison").root
    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    offline.submit("poison", np.array([[1e7, 0, 0, 0]], np.float32), key="bad")
    for i in range(3):
        offline.submit("poison", np.full((1, 4), i / 10, np.float32), key=f"ok-{i}")
    offline.close()
    outbox = Outbox(path, backoff_s=0.0, max_attempts=2)
    online = Client(edge=Local(root), retry=FAST, outbox=outbox)
    first = online.flush()
    assert sorted(first) == ["ok-0", "ok-1", "ok-2"]  # not blocked behind "bad"
    assert list(first.retrying) == ["bad"] and "EngineError" in first.retrying["bad"]
    second = online.flush()
    assert list(second.failed) == ["bad"]
    assert [f.key for f in outbox.failed()] == ["bad"]
    assert outbox.counts() == {"done": 3, "dead": 1}
    online.close()


def test_an_unreadable_stored_request_is_dead_lettered_not_raised_at_every_flush(
    tmp_path, tiny_registry
):
    """A row whose stored body no longer decodes (a damaged file, another writer's format)
    made every `claim()` raise after taking the batch: nothing was ever sent again."""
    import sqlite3

    from strato import Local, Outbox

    path = tmp_path / "outbox.sqlite"
    offline = offline_client(path)
    first, second = images(2)
    offline.submit("tiny", first, key="damaged")
    offline.submit("tiny", second, key="fine")
    offline.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET body = x'00ff' WHERE key = 'damaged'")
    outbox = Outbox(path)
    online = Client(edge=Local(tiny_registry), retry=FAST, outbox=outbox)
    report = online.flush()
    assert list(report) == ["fine"]
    assert "damaged" in report.failed and outbox.state("damaged") == "dead"
    assert [f.key for f in outbox.failed()] == ["damaged"]
    online.close()
