"""Fuzz the edge daemon's infer routes over the real Starlette app (batcher + ONNX Runtime).

Property: every request gets a 4xx with `{"error": "..."}` or a 200 with a decodable OIP answer;
never a 5xx, never an exception out of the app, never a hang; the server stays ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from hypothesis import event, given
from hypothesis import strategies as st
from strato import Registry
from strato._codec import HEADER_LENGTH, decode_response, header_length_from

# The shared strategies sit beside this file; found in any pytest import mode.
from support.fuzz import FUZZ, TIMEOUT, infer_bodies

pytest.importorskip("starlette")
pytest.importorskip("strato_edge")

pytestmark = pytest.mark.timeout(TIMEOUT)

PATHS = [
    "/v2/models/tiny/infer",
    "/v2/models/tiny/infer",
    "/v2/models/tiny/versions/1/infer",
    "/v2/models/tiny/versions/9/infer",
    "/v2/models/nope/infer",
    "/invocations",
]
CONTENT_TYPES = [
    None,
    None,
    None,
    "application/json",
    "application/octet-stream",
    "application/vnd.sagemaker-triton.binary+json;json-header-size=7",
    "text/plain; charset=utf-8",
]


@pytest.fixture(scope="module")
def edge_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from starlette.testclient import TestClient
    from strato_edge.config import ServeConfig
    from strato_edge.server import create_app

    root = tmp_path_factory.mktemp("fuzz-edge")
    registry = Registry(root / "registry")
    registry.publish(support.build_tiny_bundle(root / "src"), alias="prod")
    config = ServeConfig(store=Path(registry.url), port=0, watch_interval_s=0, timeout_s=10)
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield client


def _headers(
    header_length: int | None, garbage: str | None, content_type: str | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if garbage is not None:
        headers[HEADER_LENGTH] = garbage
    elif header_length is not None:
        headers[HEADER_LENGTH] = str(header_length)
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


def check_answer(status: int, body: bytes, headers: Any) -> str:
    """The fuzz property for one HTTP answer; returns "ok" or "refused"."""
    assert status < 500, f"{status}: {body[:300]!r}"
    if status >= 400:
        from strato._codec import loads

        error = loads(body)
        assert isinstance(error, dict) and isinstance(error.get("error"), str) and error["error"]
        return "refused"
    assert status == 200, status
    decoded = decode_response(body, header_length=header_length_from(headers))
    logits = decoded.outputs["logits"]
    assert logits.ndim == 2 and logits.shape[1] == 10
    return "ok"


@FUZZ
@given(
    case=infer_bodies,
    path=st.sampled_from(PATHS),
    garbage_length=st.sampled_from([None] * 8 + ["-1", "x", "1e3", " 12", "99999999999999999999"]),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_edge_infer_answers_4xx_or_a_valid_result(
    edge_client: Any,
    case: tuple[bytes, int | None],
    path: str,
    garbage_length: str | None,
    content_type: str | None,
) -> None:
    body, header_length = case
    response = edge_client.post(
        path, content=body, headers=_headers(header_length, garbage_length, content_type)
    )
    event(f"HTTP {response.status_code}")
    check_answer(response.status_code, response.content, response.headers)


def test_edge_still_ready_and_counted_after_fuzzing(edge_client: Any) -> None:
    assert edge_client.get("/v2/health/ready").status_code == 200
    metrics = edge_client.get("/metrics").text
    assert 'status="200"' in metrics and 'status="400"' in metrics
    assert 'status="5' not in metrics, metrics
