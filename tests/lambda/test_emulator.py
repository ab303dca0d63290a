"""`strato cloud local` driven by real boto3 (Lambda Invoke API) and httpx (HTTP API front)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from strato import Registry
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._envelope import pack

pytestmark = pytest.mark.timeout(120)

READY = re.compile(r"ready: lambda=(\S+) api=(\S+) function=(\S+) model=(\S+)")
STRATO = str(Path(sys.executable).parent / "strato")


def start_emulator(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], re.Match[str]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [STRATO, "cloud", "local", "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", **(env or {})},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return process, match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"emulator did not start:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def lambda_client(url: str) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture(scope="module")
def emulator(
    tmp_path_factory: pytest.TempPathFactory, root_helpers: Any
) -> Iterator[re.Match[str]]:
    """The CLI serving tiny@prod from a folder registry (one process for the module)."""
    build_tiny_bundle = root_helpers.build_tiny_bundle
    root = tmp_path_factory.mktemp("emulator")
    registry = Registry(root / "registry")
    registry.publish(build_tiny_bundle(root / "v1", version="1"), alias="prod")
    log = root / "log"
    process, match = start_emulator(["--model-uri", str(registry.url) + "/tiny@prod"], log)
    yield match
    stop(process)
    assert '"InferenceLatency"' in log.read_text()  # the function's EMF metrics reach stdout


def test_quiet_emulator(tiny_registry: Registry, tmp_path: Path, digit_batch: np.ndarray) -> None:
    log = tmp_path / "log"
    args = ["--model-uri", str(tiny_registry.url) + "/tiny@prod", "--quiet"]
    process, match = start_emulator(args, log)
    try:
        with httpx.Client(base_url=match.group(2), timeout=30) as http:
            body = {"inputs": digit_batch.reshape(4, -1).tolist()}
            assert http.post("/predict", json=body).status_code == 200
    finally:
        stop(process)
    assert "_aws" not in log.read_text()


def test_ready_line(emulator: re.Match[str]) -> None:
    assert emulator.group(1) == emulator.group(2)
    assert emulator.group(3) == "strato-infer" and emulator.group(4) == "tiny:1"


def test_boto3_invoke_envelope(emulator: re.Match[str], digit_batch: np.ndarray) -> None:
    client = lambda_client(emulator.group(1))
    body, length = encode_request({"input": digit_batch})
    result = client.invoke(
        FunctionName="strato-infer",
        Payload=json.dumps(pack(body, length, model="tiny", version=None)),
        LogType="Tail",
    )
    assert result["StatusCode"] == 200 and "FunctionError" not in result
    assert "REPORT RequestId" in base64.b64decode(result["LogResult"]).decode()
    answer = json.loads(result["Payload"].read())
    assert answer["status"] == 200 and answer["model_version"] == "1"
    outputs = decode_response(
        base64.b64decode(answer["body"]), header_length=answer["header_length"]
    )
    assert outputs.outputs["logits"].shape == (4, 10)


def test_boto3_invocation_types_and_errors(emulator: re.Match[str]) -> None:
    client = lambda_client(emulator.group(1))
    arn = "arn:aws:lambda:us-east-1:123456789012:function:strato-infer"
    assert (
        client.invoke(FunctionName=arn, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    )
    assert client.invoke(FunctionName="strato-infer", InvocationType="DryRun")["StatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="strato-infer", Payload=b"{not json")
    # An event that is neither HTTP API nor envelope: a handled 400 envelope, not a crash.
    answer = json.loads(client.invoke(FunctionName="strato-infer", Payload=b"{}")["Payload"].read())
    assert answer["status"] == 400


def test_sdk_lambda_transport(emulator: re.Match[str], digit_batch: np.ndarray) -> None:
    from strato import Client
    from strato._transports.aws import Lambda

    transport = Lambda("strato-infer", client=lambda_client(emulator.group(1)))
    assert transport.ready("tiny")
    assert transport.metadata("tiny")["parameters"]["precision"] == "fp32"
    with Client(cloud=transport) as client:
        prediction = client.predict("tiny", digit_batch)
    assert prediction.outputs["logits"].shape == (4, 10)
    assert prediction.model_version == "1"


def test_http_api_front(emulator: re.Match[str], digit_batch: np.ndarray) -> None:
    api = emulator.group(2)
    with httpx.Client(base_url=api, timeout=30) as http:
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/nope").status_code == 404
        body, length = encode_request({"input": digit_batch}, binary=True, binary_outputs=True)
        response = http.post(
            "/v2/models/tiny/infer", content=body, headers={HEADER_LENGTH: str(length)}
        )
        assert response.status_code == 200
        decoded = decode_response(
            response.content, header_length=int(response.headers[HEADER_LENGTH])
        )
        assert decoded.outputs["logits"].shape == (4, 10)
        predicted = http.post("/predict", json={"inputs": digit_batch.reshape(4, -1).tolist()})
        assert predicted.status_code == 200 and len(predicted.json()["labels"]) == 4
        assert http.post("/predict", content=b"{oops").status_code == 400


def test_tritonclient_against_http_api(emulator: re.Match[str], digit_batch: np.ndarray) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(emulator.group(2).removeprefix("http://"))
    assert client.is_server_ready()
    tensor = triton.InferInput("input", list(digit_batch.shape), "FP32")
    tensor.set_data_from_numpy(digit_batch, binary_data=True)
    result = client.infer("tiny", [tensor])
    assert result.as_numpy("logits").shape == (4, 10)
    client.close()


def test_separate_api_port_and_unhandled_errors(root_helpers: Any) -> None:
    from strato_lambda.emulator import Emulator

    free_port = root_helpers.free_port

    def failing(event: Any, context: Any) -> Any:
        raise ValueError("handler bug")

    with Emulator(failing, port=0, api_port=free_port()) as emulator:
        assert emulator.lambda_url != emulator.api_url
        client = lambda_client(emulator.lambda_url)
        result = client.invoke(FunctionName="strato-infer", Payload=b"{}")
        assert result["FunctionError"] == "Unhandled"
        error = json.loads(result["Payload"].read())
        assert error["errorType"] == "ValueError" and error["errorMessage"] == "handler bug"
        with httpx.Client(timeout=10) as http:
            assert http.get(emulator.api_url + "/anything").status_code == 500
            assert http.get(emulator.lambda_url + "/anything").status_code == 404


def test_emulator_loads_from_s3(
    moto_s3: tuple[str, Any], tiny_bundle: Any, tmp_path: Path, digit_batch: np.ndarray
) -> None:
    endpoint, s3 = moto_s3
    Registry("s3://models/registry", s3_client=s3).publish(tiny_bundle, alias="prod")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STRATO_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = ["--model-uri", "s3://models/registry/tiny@prod", "--s3-endpoint", endpoint]
    process, match = start_emulator(args, tmp_path / "log", env)
    try:
        assert match.group(4) == "tiny:1"
        # cached by registry URL and manifest sha256
        assert len(list((tmp_path / "cache").glob("*/tiny/1.*/manifest.json"))) == 1
        with httpx.Client(base_url=match.group(2), timeout=30) as http:
            response = http.post("/predict", json={"inputs": digit_batch.reshape(4, -1).tolist()})
        assert response.status_code == 200 and response.json()["model_version"] == "1"
    finally:
        stop(process)


def _raw_answer(url: str, request: bytes) -> bytes:
    """Send `request` (headers, maybe a partial body) and read the answer without sending more."""
    import socket
    from urllib.parse import urlsplit

    split = urlsplit(url)
    with socket.create_connection((split.hostname, split.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)  # a timeout here means the emulator waits for the body
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(
    ("length", "status"),
    [("300000000", b" 413 "), ("-1", b" 400 "), ("12abc", b" 400 ")],
    ids=["300MB-promised", "minus-one", "not-a-number"],
)
def test_emulator_refuses_bad_lengths_before_reading(
    emulator: re.Match[str], length: str, status: bytes, digit_batch: np.ndarray
) -> None:
    for path in ("/2015-03-31/functions/strato-infer/invocations", "/v2/models/tiny/infer"):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        answer = _raw_answer(emulator.group(1), head.encode() + b"{")
        assert status in answer.split(b"\r\n", 1)[0], answer[:200]
    # and it still answers a proper invocation
    body, header_length = encode_request({"input": digit_batch[:1]})
    result = lambda_client(emulator.group(1)).invoke(
        FunctionName="strato-infer",
        Payload=json.dumps(pack(body, header_length, model="tiny", version=None)),
    )
    assert json.loads(result["Payload"].read())["status"] == 200
