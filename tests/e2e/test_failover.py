"""Real processes, real faults: SIGKILL the edge daemon while a client loop predicts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from strato import BreakerConfig, Client, Edge, Lambda, Prediction, Retry
from support.servers import edge_server, free_port

pytestmark = pytest.mark.timeout(180)


class PredictLoop:
    """Predicts in a thread until stopped; keeps every Prediction and every exception."""

    def __init__(self, client: Client, model: str, x: np.ndarray) -> None:
        self.client, self.model, self.x = client, model, x
        self.answers: list[Prediction] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self.client.predict(self.model, self.x))
            except Exception as exc:
                self.errors.append(exc)
            time.sleep(0.002)

    def start(self) -> PredictLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for(
        self, condition: Callable[[list[Prediction]], bool], what: str, timeout: float = 60
    ) -> int:
        """Wait until `condition(answers)` holds; returns how many answers there were then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answers = list(self.answers)
            if condition(answers):
                return len(answers)
            time.sleep(0.02)
        tail = [(a.served_by, a.route_reason) for a in self.answers[-5:]]
        raise AssertionError(
            f"timed out waiting for {what}; last answers {tail}, errors {self.errors[-3:]}"
        )


def test_sigkill_the_edge_no_call_fails_and_traffic_returns(tmp_path, tiny_store, tiny_cloud):
    port = free_port()
    edge = edge_server(tiny_store, port, tmp_path / "edge.log").start()
    breaker = BreakerConfig(failures=3, window_s=5, cooldown_s=0.3, max_cooldown_s=1.0, successes=3)
    client = Client(
        edge=Edge(edge.url, timeout=2.0),
        cloud=Lambda("strato-infer", endpoint_url=tiny_cloud.url),
        retry=Retry(attempts=2, base_ms=2, cap_ms=20),
        breaker=breaker,
    )
    edge_breaker = client.backends[0].breaker
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    loop = PredictLoop(client, "tiny", x).start()
    try:
        loop.wait_for(lambda a: sum(p.served_by == "edge" for p in a) >= 20, "20 edge answers")
        edge.kill()
        killed_at = len(loop.answers)
        loop.wait_for(
            lambda a: sum(p.served_by == "lambda" for p in a[killed_at:]) >= 30, "30 cloud answers"
        )
        assert edge_breaker.opened >= 1
        reasons = {p.route_reason for p in loop.answers[killed_at:]}
        assert "edge-open→cloud" in reasons  # the open breaker skips the dead edge
        edge = edge_server(tiny_store, port, tmp_path / "edge.log").start()
        back = loop.wait_for(
            lambda a: len(a) > 20 and all(p.served_by == "edge" for p in a[-20:]),
            "traffic back on the edge",
        )
        assert back > killed_at
    finally:
        loop.stop()
        edge.stop()
        client.close()
    assert loop.errors == []  # zero failed calls, through the kill and the restart
    assert edge_breaker.state == "closed"
    served = {p.served_by for p in loop.answers}
    assert served == {"edge", "lambda"}
    assert {p.model_version for p in loop.answers} == {"1"}
