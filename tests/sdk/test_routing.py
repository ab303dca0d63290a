"""Policies, failover, retries, breakers, privacy and version gates, cascade and hedging, with
real transports: `Local` and `Edge` on the edge tier, `Lambda` (boto3 invoke) on the cloud tier."""

from __future__ import annotations

import time

import numpy as np
import pytest
from strato import (
    BreakerConfig,
    Client,
    ConfigError,
    Edge,
    InvalidInput,
    Lambda,
    Local,
    Retry,
    Timeout,
    Unavailable,
    VersionMismatch,
    policies,
)
from strato._client import chunk_rows, softmax
from support.servers import private_bundle

pytestmark = pytest.mark.timeout(60)

FAST = Retry(attempts=2, base_ms=1, cap_ms=5)


def lambda_to(server) -> Lambda:
    return Lambda("strato-infer", endpoint_url=server.url)


def test_edge_first_answers_on_the_edge_with_provenance(tiny_registry, cloud_standin, digit_batch):
    client = Client(edge=Local(tiny_registry), cloud=lambda_to(cloud_standin))
    pred = client.predict("tiny", digit_batch)
    assert (pred.served_by, pred.model_version, pred.precision) == ("local", "2", "fp32")
    assert (pred.route_reason, pred.attempts) == ("edge", 1)
    assert pred.latency_ms > 0 and pred.output.shape == (4, 10)
    assert cloud_standin.requests == 0


def test_failover_to_the_cloud_after_retries(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin), retry=FAST)
    client.metadata("tiny")
    edge_standin.fail(503, times=2)
    pred = client.predict("tiny", digit_batch)
    assert pred.served_by == "lambda"
    assert pred.route_reason == "edge-unavailable→cloud"
    assert pred.attempts == 3


def test_retry_on_the_edge_then_success(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin), retry=FAST)
    client.metadata("tiny")
    edge_standin.fail(429)
    pred = client.predict("tiny", digit_batch)
    assert (pred.served_by, pred.route_reason, pred.attempts) == ("edge", "edge", 2)
    assert cloud_standin.requests == 0


def test_bad_input_is_never_rerouted(tiny_registry, cloud_standin, digit_batch):
    client = Client(edge=Local(tiny_registry), cloud=lambda_to(cloud_standin))
    with pytest.raises(InvalidInput):
        client.predict("tiny", digit_batch[:, :, :20])
    with pytest.raises(InvalidInput):
        client.predict("tiny", "not an array")  # type: ignore[arg-type]
    assert cloud_standin.requests == 0


def test_breaker_opens_skips_the_edge_and_closes_again(edge_standin, cloud_standin, digit_batch):
    breaker = BreakerConfig(failures=3, window_s=30, cooldown_s=1.0, successes=2)
    client = Client(
        edge=Edge(edge_standin.url),
        cloud=lambda_to(cloud_standin),
        retry=Retry(attempts=1),
        breaker=breaker,
    )
    client.metadata("tiny")
    edge_breaker = client.backends[0].breaker
    edge_standin.fail(503, times=3)
    reasons = [client.predict("tiny", digit_batch).route_reason for _ in range(3)]
    assert reasons == ["edge-unavailable→cloud"] * 3
    assert edge_breaker.state == "open" and edge_breaker.opened == 1
    seen = edge_standin.requests
    pred = client.predict("tiny", digit_batch)
    assert (pred.served_by, pred.route_reason) == ("lambda", "edge-open→cloud")
    assert edge_standin.requests == seen  # an open breaker sends nothing to the edge
    time.sleep(1.05)
    first = client.predict("tiny", digit_batch)  # the half-open probe
    assert first.served_by == "edge" and edge_breaker.state == "half-open"
    assert client.predict("tiny", digit_batch).served_by == "edge"
    assert edge_breaker.state == "closed"


def test_cloud_first_edge_only_cloud_only(tiny_registry, edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Local(tiny_registry), cloud=lambda_to(cloud_standin))
    assert client.predict("tiny", digit_batch, policy=policies.CloudFirst()).served_by == "lambda"
    assert client.predict("tiny", digit_batch, policy=policies.CloudOnly()).served_by == "lambda"
    assert client.predict("tiny", digit_batch, policy=policies.EdgeOnly()).served_by == "local"
    down = Client(
        edge=Edge(edge_standin.url),
        cloud=lambda_to(cloud_standin),
        retry=FAST,
        policy=policies.EdgeOnly(),
    )
    down.metadata("tiny")
    edge_standin.fail(503, times=2)
    before = cloud_standin.requests
    with pytest.raises(Unavailable):
        down.predict("tiny", digit_batch)
    assert cloud_standin.requests == before


def test_privacy_gate_client_option(edge_standin, cloud_standin, digit_batch):
    client = Client(
        edge=Edge(edge_standin.url),
        cloud=lambda_to(cloud_standin),
        retry=FAST,
        cloud_never={"tiny"},
    )
    client.metadata("tiny")
    edge_standin.fail(503, times=2)
    with pytest.raises(Unavailable):
        client.predict("tiny", digit_batch)
    for policy in (
        policies.Cascade(threshold=1.0),
        policies.LatencySLO(deadline_ms=500, hedge_after_ms=0),
    ):
        assert client.predict("tiny", digit_batch, policy=policy).served_by == "edge"
    with pytest.raises(ConfigError, match="cloud: never"):
        client.predict("tiny", digit_batch, policy=policies.CloudOnly())
    assert cloud_standin.requests == 0


def test_privacy_gate_from_the_manifest(tmp_path, cloud_standin, digit_batch):
    client = Client(edge=Local(private_bundle(tmp_path / "secret")), cloud=lambda_to(cloud_standin))
    pred = client.predict("secret", digit_batch, policy=policies.Cascade(threshold=1.0))
    assert pred.served_by == "local" and "cloud: never" in pred.route_reason
    with pytest.raises(ConfigError, match="cloud: never"):
        client.predict("secret", digit_batch, policy=policies.CloudOnly())
    assert cloud_standin.requests == 0


def test_require_same_version(edge_standin, cloud_standin, digit_batch):
    strict = Client(
        edge=Edge(edge_standin.url),
        cloud=lambda_to(cloud_standin),
        retry=FAST,
        require_same_version=True,
    )
    assert strict.predict("tiny", digit_batch).model_version == "2"
    edge_standin.fail(503, times=2)
    with pytest.raises(VersionMismatch, match="require_same_version") as caught:
        strict.predict("tiny", digit_batch)  # the cloud serves tiny:1
    # every tier's failure is listed: the edge's outage and the cloud's other version
    assert [type(e) for e in caught.value.failures] == [Unavailable, VersionMismatch]
    assert "edge: edge answered 503" in str(caught.value)
    relaxed = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin), retry=FAST)
    relaxed.predict("tiny", digit_batch)
    edge_standin.fail(503, times=2)
    assert relaxed.predict("tiny", digit_batch).model_version == "1"


def test_cascade_escalates_low_confidence_rows(tiny_registry, cloud_standin, digit_batch):
    edge = Local(tiny_registry)
    client = Client(edge=edge, cloud=lambda_to(cloud_standin))
    edge_logits = client.predict("tiny", digit_batch, policy=policies.EdgeOnly()).output
    cloud_logits = client.predict("tiny", digit_batch, policy=policies.CloudOnly()).output
    confidence = softmax(edge_logits).max(axis=-1)
    threshold = float(np.median(confidence))
    pred = client.predict("tiny", digit_batch, policy=policies.Cascade(threshold=threshold))
    low = confidence < threshold
    assert pred.served_by == "local+lambda"
    assert pred.route_reason == f"cascade {low.sum()}/4 rows p<{threshold:.2f} (argument)→cloud"
    np.testing.assert_allclose(pred.output[low], cloud_logits[low], rtol=1e-5)
    np.testing.assert_allclose(pred.output[~low], edge_logits[~low], rtol=1e-5)
    everything = client.predict("tiny", digit_batch[:1], policy=policies.Cascade(threshold=1.0))
    assert everything.served_by == "lambda" and everything.route_reason.startswith("cascade p=")
    assert "<1.00 (argument)→cloud" in everything.route_reason
    nothing = client.predict("tiny", digit_batch[:1], policy=policies.Cascade(threshold=0.0))
    assert nothing.served_by == "local" and "≥0.00" in nothing.route_reason


def test_cascade_reads_the_manifest_threshold_and_keeps_the_edge_answer_when_the_cloud_is_down(
    tiny_registry, cloud_standin, digit_batch
):
    client = Client(
        edge=Local(tiny_registry),
        cloud=lambda_to(cloud_standin),
        retry=FAST,
        policy=policies.Cascade(),
    )
    pred = client.predict("tiny", digit_batch[:1])
    assert "0.80 (manifest)" in pred.route_reason  # calibration.cascade_threshold
    cloud_standin.fail(503, times=2)
    kept = client.predict("tiny", digit_batch[:1], policy=policies.Cascade(threshold=1.0))
    assert kept.served_by == "local"
    assert kept.route_reason.endswith("cloud-unavailable: edge answer kept")


def _warm_cloud(client: Client, digit_batch) -> None:
    # The first Lambda call builds botocore's client (service model loading: up to a second on
    # a loaded 2-core box); a hedge timing test measures the race, not that one-off cost.
    client.predict("tiny", digit_batch, policy=policies.CloudOnly())


def test_hedged_request_wins_over_a_slow_edge(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin))
    client.metadata("tiny")
    _warm_cloud(client, digit_batch)
    edge_standin.delay_s = 2.0
    pred = client.predict(
        "tiny", digit_batch, policy=policies.LatencySLO(deadline_ms=3000, hedge_after_ms=50)
    )
    assert pred.served_by == "lambda"
    assert pred.route_reason == "hedge after 50ms: cloud won"
    assert pred.latency_ms < 3000  # within the deadline, not after the slow edge
    edge_standin.delay_s = 0
    fast = client.predict(
        "tiny", digit_batch, policy=policies.LatencySLO(deadline_ms=3000, hedge_after_ms=1000)
    )
    assert (fast.served_by, fast.route_reason) == ("edge", "edge")


def test_hedge_delay_is_learned_from_the_edge_p95(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin))
    slo = policies.LatencySLO(deadline_ms=3000)
    for _ in range(20):  # until 20 samples, the hedge waits half the budget: the edge wins
        assert client.predict("tiny", digit_batch, policy=slo).served_by == "edge"
    assert client.backends[0].latency.p95() is not None
    _warm_cloud(client, digit_batch)
    edge_standin.delay_s = 2.0
    pred = client.predict("tiny", digit_batch, policy=slo)
    assert pred.served_by == "lambda" and pred.route_reason.startswith("hedge after ")


def test_deadline_with_every_tier_slow_is_a_timeout(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin))
    client.metadata("tiny")
    edge_standin.delay_s = cloud_standin.delay_s = 1.0
    with pytest.raises(Timeout):
        client.predict(
            "tiny", digit_batch, policy=policies.LatencySLO(deadline_ms=300, hedge_after_ms=50)
        )


def test_predict_many_chunks_within_the_payload_limit(tiny_registry, cloud_standin):
    batch = np.random.default_rng(1).random((25, 1, 28, 28), dtype=np.float32)
    cloud = lambda_to(cloud_standin)
    cloud.payload_limit = 64 * 1024 + 10 * 784 * 4  # ten rows a request
    assert chunk_rows({"input": batch}, cloud.payload_limit) == 10
    client = Client(edge=Local(tiny_registry), cloud=cloud)
    chunks = client.predict_many("tiny", batch)
    assert [len(p.output) for p in chunks] == [10, 10, 5]
    whole = client.predict("tiny", batch).output
    np.testing.assert_allclose(np.concatenate([p.output for p in chunks]), whole, rtol=1e-6)


def test_classify_uses_labels_and_temperature(tiny_registry, digit_batch):
    client = Client(edge=Local(tiny_registry))
    result = client.classify("tiny", digit_batch)
    assert len(result.labels) == 4 and set(result.labels) <= {str(i) for i in range(10)}
    np.testing.assert_allclose(result.probabilities.sum(axis=-1), 1.0, rtol=1e-6)
    assert result.prediction.served_by == "local"


def test_client_configuration_errors(tiny_registry, cloud_standin):
    with pytest.raises(ConfigError):
        Client()
    with pytest.raises(ConfigError, match="edge-tier"):
        Client(edge=lambda_to(cloud_standin))
    with pytest.raises(ConfigError, match="cloud-tier"):
        Client(cloud=Local(tiny_registry))
    with pytest.raises(ConfigError):
        policies.Cascade(threshold=2.0)
    with pytest.raises(ConfigError):
        policies.LatencySLO(deadline_ms=10, hedge_after_ms=20)


def test_setup_mistakes_are_config_errors_never_outages(
    tiny_registry, edge_standin, cloud_daemon, digit_batch
):
    with pytest.raises(ConfigError, match="takes a transport"):
        Client(edge="http://127.0.0.1:8000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="http://"):
        Client(edge=Edge("127.0.0.1:8000"))  # no scheme: refused before any call
    breaker = BreakerConfig(failures=1, window_s=60, cooldown_s=60, max_cooldown_s=60)
    unknown = Lambda("no-such-function", endpoint_url=cloud_daemon.url)
    client = Client(edge=Edge(edge_standin.url), cloud=unknown, retry=FAST, breaker=breaker)
    client.metadata("tiny")
    edge_standin.fail(503, times=2)
    with pytest.raises(ConfigError, match="no-such-function"):
        client.predict("tiny", digit_batch)  # the edge is down; the cloud is misnamed: say so
    seen = edge_standin.requests
    with pytest.raises(ConfigError, match="no-such-function"):
        client.predict("tiny", digit_batch, policy=policies.CloudFirst())
    assert edge_standin.requests == seen  # no silent fall back to the edge
    cloud_breaker = client.backends[1].breaker
    assert (cloud_breaker.state, cloud_breaker.opened) == ("closed", 0)


def test_a_sagemaker_only_client_reads_metadata_from_the_container(
    session_registry, tmp_path, digit_batch
):
    from pathlib import Path

    from strato import SageMaker
    from support.servers import SageMakerFront, edge_server, free_port

    port = free_port()
    container = edge_server(Path(session_registry.url), port, tmp_path / "sm.log", "--sagemaker")
    container.ready_url = f"http://127.0.0.1:{port}/ping"
    container.start()
    front = SageMakerFront(container.url)
    try:
        endpoint = SageMaker("strato-tiny", endpoint_url=front.url, target_model="tiny")
        client = Client(cloud=endpoint)
        pred = client.predict("tiny", digit_batch)  # metadata via CustomAttributes
        assert (pred.served_by, pred.tier) == ("sagemaker", "cloud")
        assert pred.outputs["logits"].shape == (len(digit_batch), 10)
    finally:
        front.close()
        container.stop()


def test_a_sagemaker_only_client_without_metadata_is_a_config_error(
    session_registry, tmp_path, digit_batch
):
    from pathlib import Path

    from strato import SageMaker
    from support.servers import SageMakerFront, edge_server, free_port

    port = free_port()
    container = edge_server(Path(session_registry.url), port, tmp_path / "sm.log", "--sagemaker")
    container.ready_url = f"http://127.0.0.1:{port}/ping"
    container.start()
    front = SageMakerFront(container.url, drop_custom_attributes=True)
    try:
        client = Client(cloud=SageMaker("strato-tiny", endpoint_url=front.url, target_model="tiny"))
        with pytest.raises(ConfigError, match="strato-metadata"):
            client.predict("tiny", digit_batch)
        assert client.backends[0].breaker.opened == 0  # a setup mistake, not an outage
    finally:
        front.close()
        container.stop()


def test_every_tier_failing_lists_each_tier(edge_standin, cloud_standin, digit_batch):
    client = Client(edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin), retry=FAST)
    client.metadata("tiny")
    edge_standin.fail(503, times=2)
    cloud_standin.fail(503, times=2)
    with pytest.raises(Unavailable, match="every tier failed") as caught:
        client.predict("tiny", digit_batch)
    assert [e.backend for e in caught.value.failures] == ["edge", "lambda"]
    assert "edge: edge answered 503" in str(caught.value)
    assert "lambda: " in str(caught.value)


def test_require_same_version_compares_with_the_version_the_edge_serves(tmp_path, digit_batch):
    """A device holding tiny:1 and tiny:2 that serves 2 (prod): a cloud answer from 2 is fine."""
    from pathlib import Path

    import support
    from strato import Registry
    from support.servers import StandIn, edge_server, free_port

    registry = Registry(tmp_path / "registry")
    registry.publish(support.build_tiny_bundle(tmp_path / "v1", version="1", seed=0))
    registry.publish(support.build_tiny_bundle(tmp_path / "v2", version="2", seed=1), alias="prod")
    edge = edge_server(Path(registry.url), free_port(), tmp_path / "edge.log").start()
    same = StandIn(support.build_tiny_bundle(tmp_path / "c2", version="2", seed=5)).start()
    other = StandIn(support.build_tiny_bundle(tmp_path / "c1", version="1", seed=5)).start()
    try:
        strict = [
            Client(edge=Edge(edge.url), cloud=lambda_to(cloud), require_same_version=True)
            for cloud in (same, other)
        ]
        for client in strict:
            assert client.metadata("tiny")["versions"] == ["1", "2"]  # both installed
            assert client.router.models["tiny"].version == "2"  # the one it serves
        edge.kill()
        answer = strict[0].predict("tiny", digit_batch)
        assert (answer.tier, answer.model_version) == ("cloud", "2")
        with pytest.raises(VersionMismatch, match="serves version 2"):
            strict[1].predict("tiny", digit_batch)
    finally:
        edge.stop()
        same.stop()
        other.stop()


def test_edge_only_never_asks_the_cloud_for_metadata(edge_standin, cloud_standin, digit_batch):
    client = Client(
        edge=Edge(edge_standin.url), cloud=lambda_to(cloud_standin), policy=policies.EdgeOnly()
    )
    edge_standin.fail(503)
    with pytest.raises(Unavailable):
        client.predict("tiny", digit_batch)  # the edge's metadata failed; the cloud is not asked
    assert client.predict("tiny", digit_batch).tier == "edge"
    assert cloud_standin.requests == 0


def tiny_variant(root, *, task="classification", calibration=None, logits=(-1, 10), name="tiny"):
    """The tiny model under another manifest: task, calibration, declared output shape."""
    import support
    from strato import TensorSpec, make_bundle

    root.mkdir(parents=True, exist_ok=True)
    support.write_tiny_onnx(root / "model.onnx", seed=0)
    return make_bundle(
        root,
        name=name,
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", logits)],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        opset=17,
        task=task,
        calibration=calibration or {},
    )


def test_cascade_refuses_what_is_not_a_calibrated_classifier(tmp_path, cloud_standin, digit_batch):
    cloud = lambda_to(cloud_standin)
    cases = {
        "not a classifier": (tiny_variant(tmp_path / "r", task="regression"), policies.Cascade()),
        "no output 'scores'": (
            tiny_variant(tmp_path / "o"),
            policies.Cascade(threshold=0.5, output="scores"),
        ),
        "one column": (
            tiny_variant(tmp_path / "c", logits=(-1, 1)),
            policies.Cascade(threshold=0.5),
        ),
        "strato calibrate": (tiny_variant(tmp_path / "u"), policies.Cascade()),  # no silent 0.8
        "no confidence threshold reaches the target precision": (
            tiny_variant(
                tmp_path / "n",
                calibration={"temperature": 1.2, "cascade_threshold": None,
                             "threshold_status": "unreachable"},
            ),
            policies.Cascade(),
        ),
    }
    for message, (bundle, cascade) in cases.items():
        client = Client(edge=Local(bundle), cloud=cloud, policy=cascade)
        with pytest.raises(ConfigError, match=message):
            client.predict("tiny", digit_batch)
    assert cloud_standin.requests == 0  # refused at the first call, before anything was sent


def test_cascade_with_a_confidence_function_for_another_task(tmp_path, digit_batch):
    from support.servers import StandIn

    bundle = tiny_variant(tmp_path / "r", task="regression")
    cloud_server = StandIn(bundle, name="cloud").start()
    try:
        client = Client(edge=Local(bundle), cloud=lambda_to(cloud_server))
        scores = client.predict("tiny", digit_batch, policy=policies.EdgeOnly()).output

        def confidence(outputs):
            return outputs["logits"].max(axis=1)  # e.g. a detector's best box score

        threshold = float(np.median(scores.max(axis=1)))
        custom = policies.Cascade(confidence=confidence, threshold=threshold)
        pred = client.predict("tiny", digit_batch, policy=custom)
        low = int((scores.max(axis=1) < threshold).sum())
        assert pred.route_reason == f"cascade {low}/4 rows p<{threshold:.2f} (argument)→cloud"
        assert (pred.served_by, pred.tier) == ("local+lambda", "local+cloud")
        default = client.predict(
            "tiny", digit_batch[:1], policy=policies.Cascade(confidence=confidence)
        )
        assert "0.50 (default)" in default.route_reason
        with pytest.raises(ConfigError, match="classify"):
            client.classify("tiny", digit_batch)  # not a classifier: no labels to give
    finally:
        cloud_server.stop()
