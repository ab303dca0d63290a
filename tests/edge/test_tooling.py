"""Operator tooling on the daemon: the unauthenticated metrics port, Triton's config and stats."""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def test_the_metrics_port_answers_without_the_token(tiny_registry, edge_server, digit_batch):
    server = edge_server(tiny_registry.url, token="s3cret", metrics_port=0)
    port = server.server.metrics_port
    assert port is not None and port != server.port
    with httpx.Client(base_url=server.url) as api:
        assert api.get("/metrics").status_code == 401  # the API itself keeps its token
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                            "data": digit_batch[:1].ravel().tolist()}]}  # fmt: skip
        headers = {"Authorization": "Bearer s3cret"}
        assert api.post("/v2/models/tiny/infer", json=body, headers=headers).status_code == 200
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'strato_edge_requests_total{model="tiny",status="200"} 1' in scraped.text
    other = httpx.get(f"http://127.0.0.1:{port}/v2/models/tiny")
    assert other.status_code == 404 and "error" in other.json()  # nothing but metrics there
    with socket.create_connection(("127.0.0.1", port), timeout=5) as junk:
        junk.sendall(b"\x00\xff garbage\r\n\r\n")
        junk.recv(1024)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
