"""Each transport against a real server: the edge daemon and the cloud emulator as subprocesses,
the stand-in for what AWS alone offers (throttling, SageMaker runtime, SigV4 HTTP API)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from strato import (
    AsyncEdge,
    ConfigError,
    Edge,
    InferRequest,
    InvalidInput,
    Lambda,
    Local,
    ModelNotFound,
    SageMaker,
    Throttled,
    Timeout,
    Unavailable,
)
from support.servers import free_port

pytestmark = pytest.mark.timeout(120)


def request(batch: np.ndarray, model: str = "tiny", version: str | None = None) -> InferRequest:
    return InferRequest(model, {"input": batch}, version)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_edge_matches_local_engine(edge_daemon, session_registry, digit_batch, binary):
    with Edge(edge_daemon.url, binary=binary) as edge, Local(session_registry) as local:
        answer = edge.infer(request(digit_batch))
        expected = local.infer(request(digit_batch, model="tiny@prod"))
    assert answer.served_by == "edge"
    assert answer.model_version == "1"  # the daemon serves alias prod
    assert answer.precision == "fp32"
    np.testing.assert_allclose(
        answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5, atol=1e-5
    )


def test_edge_pinned_version_and_metadata(edge_daemon, digit_batch):
    with Edge(edge_daemon.url) as edge:
        assert edge.infer(request(digit_batch, version="2")).model_version == "2"
        metadata = edge.metadata("tiny")
        assert metadata["parameters"]["calibration"]["cascade_threshold"] == 0.8
        assert metadata["parameters"]["labels"][3] == "3"
        assert edge.ready("tiny") and not edge.ready("nope")


def test_edge_errors_are_typed(edge_daemon, digit_batch):
    with Edge(edge_daemon.url) as edge:
        with pytest.raises(InvalidInput, match="400"):
            edge.infer(request(digit_batch[:, :, :27]))
        with pytest.raises(ModelNotFound):
            edge.infer(request(digit_batch, model="nope"))
    with Edge(f"http://127.0.0.1:{free_port()}") as closed, pytest.raises(Unavailable):
        closed.infer(request(digit_batch))


def test_http_faults_are_typed(standin, digit_batch):
    with Edge(standin.url) as edge:
        standin.fail(503)
        with pytest.raises(Unavailable, match="503"):
            edge.infer(request(digit_batch))
        standin.fail(429)
        with pytest.raises(Throttled):
            edge.infer(request(digit_batch))
        standin.fail(401)
        with pytest.raises(ConfigError, match="token"):
            edge.infer(request(digit_batch))
        standin.delay_s = 0.5
        with pytest.raises(Timeout):
            edge.infer(request(digit_batch), timeout=0.1)


def test_lambda_invoke_through_the_emulator(cloud_daemon, session_registry, digit_batch):
    cloud = Lambda("strato-infer", endpoint_url=cloud_daemon.url)
    answer = cloud.infer(request(digit_batch))
    expected = Local(session_registry).infer(request(digit_batch, model="tiny@prod"))
    assert (answer.served_by, answer.model_version) == ("lambda", "1")
    np.testing.assert_allclose(
        answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5, atol=1e-5
    )
    assert cloud.metadata("tiny")["parameters"]["labels"][0] == "0"
    with pytest.raises(InvalidInput):
        cloud.infer(request(digit_batch.astype(np.float64)))
    missing = Lambda("no-such-function", endpoint_url=cloud_daemon.url)
    with pytest.raises(ConfigError, match=r"no-such-function|not found|Function"):
        missing.infer(request(digit_batch))  # a setup mistake, not an outage


def test_lambda_http_api_through_the_emulator(cloud_daemon, digit_batch):
    with Lambda(http_url=cloud_daemon.url, sigv4=True) as cloud:
        answer = cloud.infer(request(digit_batch))
    assert answer.served_by == "lambda" and answer.outputs["logits"].shape == (4, 10)


def test_lambda_sigv4_signature_and_throttling(standin, digit_batch):
    with Lambda(http_url=standin.url, sigv4=True, region="eu-west-1") as cloud:
        cloud.infer(request(digit_batch))
    authorization = standin.headers[-1]["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "X-Amz-Date" in standin.headers[-1]
    invoke = Lambda("strato-infer", endpoint_url=standin.url)
    standin.fail(429)
    with pytest.raises(Throttled):
        invoke.infer(request(digit_batch))
    standin.fail(500)
    with pytest.raises(Unavailable):
        invoke.infer(request(digit_batch))
    assert invoke.infer(request(digit_batch)).model_version == "2"


def test_lambda_needs_one_target():
    with pytest.raises(ConfigError):
        Lambda()
    with pytest.raises(ConfigError):
        Lambda("f", http_url="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="sigv4"):
        Lambda("f", sigv4=True)  # an HTTP API option on a direct invoke
    with pytest.raises(ConfigError, match="qualifier"):
        Lambda(http_url="http://127.0.0.1:1", qualifier="live")


def test_lambda_is_two_transports_behind_one_constructor(standin):
    from strato._transports import LambdaHttpApi, LambdaInvoke

    invoke = Lambda("strato-infer", endpoint_url=standin.url)
    api = Lambda(http_url=standin.url)
    assert type(invoke) is LambdaInvoke and type(api) is LambdaHttpApi
    assert isinstance(invoke, Lambda) and isinstance(api, Lambda)
    assert invoke.payload_limit == api.payload_limit == 6_291_456
    # the invoke payload base64-encodes the body: about 3/4 of the limit is left for tensors
    assert 4_600_000 < invoke.max_tensor_bytes(1) < 6_291_456 * 3 // 4


def test_lambda_invoke_honours_the_call_timeout(standin, digit_batch):
    cloud = Lambda("strato-infer", endpoint_url=standin.url, timeout=30.0)
    cloud.infer(request(digit_batch), timeout=4.0)
    standin.delay_s = 1.5  # answers after 1.5 s: a 30 s read timeout would wait for it
    with pytest.raises(Timeout):
        cloud.infer(request(digit_batch), timeout=0.6)  # the router's deadline bounds the call
    # one client per timeout bucket, built once (30 s, the transport's own, at construction)
    assert cloud._clients.built == [0.5, 2.0, 30.0]
    standin.delay_s = 0
    cloud.infer(request(digit_batch), timeout=0.7)
    assert cloud._clients.built == [0.5, 2.0, 30.0]


def test_missing_aws_credentials_are_a_config_error(standin, digit_batch, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cloud = Lambda("strato-infer", endpoint_url=standin.url)
    with pytest.raises(ConfigError, match="credentials"):
        cloud.infer(request(digit_batch))
    assert standin.requests == 0


def test_sagemaker_runtime(standin, tiny_registry, digit_batch):
    endpoint = SageMaker("strato-tiny", endpoint_url=standin.url)
    answer = endpoint.infer(request(digit_batch))
    expected = Local(tiny_registry).infer(request(digit_batch))
    np.testing.assert_allclose(
        answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5, atol=1e-5
    )
    assert answer.served_by == "sagemaker" and answer.model_version == "2"
    body = standin.headers[-1]
    assert body["Content-Type"].startswith(
        "application/vnd.sagemaker-triton.binary+json;json-header-size="
    )
    with pytest.raises(InvalidInput):
        endpoint.infer(request(digit_batch[:, :, :5]))
    standin.fail(503)
    with pytest.raises(Unavailable):
        endpoint.infer(request(digit_batch))
    assert endpoint.payload_limit == 4 * 1024 * 1024  # serverless
    assert SageMaker("e", endpoint_url=standin.url, serverless=False).payload_limit == 6_291_456
    metadata = endpoint.metadata("tiny")  # through CustomAttributes: strato-metadata
    assert metadata["inputs"][0]["name"] == "input"
    assert standin.headers[-1]["X-Amzn-SageMaker-Custom-Attributes"] == "strato-metadata"


def test_async_edge(edge_daemon, digit_batch):
    async def main() -> None:
        edge = AsyncEdge(edge_daemon.url)
        try:
            answers = await asyncio.gather(*(edge.infer(request(digit_batch)) for _ in range(8)))
            assert {a.model_version for a in answers} == {"1"}
            assert (await edge.metadata("tiny"))["name"] == "tiny"
            with pytest.raises(InvalidInput):
                await edge.infer(request(digit_batch[:, :, :3]))
        finally:
            await edge.aclose()

    asyncio.run(main())


def test_sagemaker_through_the_real_container(session_registry, tmp_path, digit_batch):
    """`strato edge serve --sagemaker` behind a runtime front: the content types must agree."""
    from support.servers import SageMakerFront, edge_server

    port = free_port()
    container = edge_server(Path(session_registry.url), port, tmp_path / "sm.log", "--sagemaker")
    container.ready_url = f"http://127.0.0.1:{port}/ping"
    container.start()
    front = SageMakerFront(container.url)
    try:
        endpoint = SageMaker("strato-tiny", endpoint_url=front.url, target_model="tiny")
        answer = endpoint.infer(request(digit_batch))
        expected = Local(session_registry).infer(request(digit_batch, model="tiny@prod"))
        np.testing.assert_allclose(
            answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5, atol=1e-5
        )
        assert answer.model_version == "1"
        with pytest.raises(InvalidInput):
            endpoint.infer(request(digit_batch[:, :, :7]))
        # CustomAttributes: strato-metadata, answered by the container itself
        metadata = endpoint.metadata("tiny")
        assert [spec["name"] for spec in metadata["inputs"]] == ["input"]
        assert metadata["outputs"][0]["name"] == "logits"
    finally:
        front.close()
        container.stop()


def test_edge_token(session_registry, tmp_path, digit_batch):
    from support.servers import edge_server

    proc = edge_server(
        Path(session_registry.url), free_port(), tmp_path / "token.log", "--token", "s3cret"
    ).start()
    try:
        with Edge(proc.url, token="s3cret") as edge:
            assert edge.infer(request(digit_batch)).outputs["logits"].shape == (4, 10)
        with Edge(proc.url) as anonymous, pytest.raises(ConfigError, match="401"):
            anonymous.infer(request(digit_batch))
    finally:
        proc.stop()
