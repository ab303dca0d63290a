"""The daemon's body limit (`--max-body-bytes`) reaches the client through model metadata, so
`Client(Edge)` splits a batch to fit instead of meeting a 413."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from strato import Client, Edge, Local, policies


def test_client_splits_rows_to_the_daemons_body_limit(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), max_body_bytes=64 * 1024)
    batch = np.random.default_rng(3).random((40, 1, 28, 28), dtype=np.float32)  # 125 KB
    edge = Edge(server.url)
    with Client(edge=edge, policy=policies.EdgeOnly()) as client:
        pred = client.predict("tiny", batch)
    assert edge.payload_limit == 64 * 1024
    assert pred.model_version == "1"  # the daemon serves prod (tiny:1)
    assert pred.attempts >= 2  # more than one request, each under 64 KiB
    expected = Client(edge=Local(tiny_registry)).predict("tiny:1", batch).outputs["logits"]
    np.testing.assert_allclose(pred.outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_metadata_carries_the_limit(tiny_registry, edge_server):
    server = edge_server(Path(tiny_registry.url), max_body_bytes=123_456)
    metadata = Edge(server.url).metadata("tiny")
    assert metadata["parameters"]["max_body_bytes"] == 123_456
