"""The raw-ASGI inference route (`strato_edge.fastpath`) against a real server: it answers like
the Starlette route did (bodies in pieces, tokens, metrics, errors), and what it does not
parse goes on to Starlette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine
from strato_edge.fastpath import parse_infer_path

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/tiny/infer", ("tiny", None)),
        ("/v2/models/tiny/versions/2/infer", ("tiny", "2")),
        ("/v2/models/tiny@prod/infer", ("tiny@prod", None)),
        ("/v2/models//infer", None),
        ("/v2/models/tiny/versions//infer", None),
        ("/v2/models/tiny/versions/2/x/infer", None),
        ("/v2/models/tiny/other/infer", None),
        ("/v2/models/tiny", None),
        ("/v2/models/tiny/inference", None),
        ("/invocations", None),
    ],
)
def test_which_paths_are_inference(path, target):
    assert parse_infer_path(path) == target


def test_a_body_in_pieces_is_answered_whole(tiny_server, tiny_registry, digit_batch):
    body, length = encode_request({"input": digit_batch})

    def pieces():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]  # no Content-Length: chunked, many ASGI messages

    with tiny_server.client() as http:
        response = http.post(
            "/v2/models/tiny/infer", content=pieces(), headers={HEADER_LENGTH: str(length)}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-strato-model-version"] == "1"
    assert response.headers["content-length"] == str(len(response.content))
    decoded = decode_response(
        response.content, header_length=int(response.headers[HEADER_LENGTH.lower()])
    )
    expected = load_engine(tiny_registry.open("tiny:1")).infer({"input": digit_batch})["logits"]
    np.testing.assert_allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_paths_it_does_not_parse_reach_starlette(tiny_server):
    with tiny_server.client() as http:
        for path in ("/v2/models/tiny/versions//infer", "/v2/models/tiny/other/infer"):
            response = http.post(path, content=b"{}")
            assert response.status_code == 404 and "error" in response.json()
        wrong_method = http.get("/v2/models/tiny/infer")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_token_errors_and_metrics(tiny_registry, edge_server, digit_batch):
    server = edge_server(Path(tiny_registry.url), token="tok")
    body, length = encode_request({"input": digit_batch})
    headers = {HEADER_LENGTH: str(length)}
    with server.client() as http:
        denied = http.post("/v2/models/tiny/infer", content=body, headers=headers)
        assert denied.status_code == 401 and "token" in denied.json()["error"]
        auth = {**headers, "authorization": "Bearer tok"}
        for _ in range(3):
            ok = http.post("/v2/models/tiny/infer", content=body, headers=auth)
            assert ok.status_code == 200
        bad = http.post("/v2/models/tiny/infer", content=body[:-4], headers=auth)
        assert bad.status_code == 400 and "error" in bad.json()
        missing = http.post("/v2/models/..%2f..%2fetc/infer", content=body, headers=auth)
        assert missing.status_code in (400, 404) and "error" in missing.json()
        metrics = http.get("/metrics", headers={"authorization": "Bearer tok"}).text
    requests = [
        line for line in metrics.splitlines() if line.startswith("strato_edge_requests_total{")
    ]
    assert any(
        'model="tiny"' in line and 'status="200"' in line and line.endswith(" 3")
        for line in requests
    ), requests
    assert any('status="401"' in line for line in requests), requests
