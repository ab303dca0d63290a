"""The dynamic batcher with a real ONNX Runtime engine: joins, splits, isolates bad requests."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, decode_response, encode_request
from strato._engines import load_engine
from strato._errors import ConfigError, InvalidInput
from strato_edge.batcher import Batcher
from strato_edge.config import BatchingConfig, load_batching

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(tiny_bundle):
    return load_engine(tiny_bundle)


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def _requests(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((1 + i % 3, 1, 28, 28), dtype=np.float32) for i in range(count)]


async def _run_all(batcher: Batcher, xs: list[np.ndarray]) -> list:
    results = await asyncio.gather(
        *(batcher.infer({"input": x}) for x in xs), return_exceptions=True
    )
    await batcher.aclose()
    return results


def test_concurrent_requests_are_joined_and_split_back(engine, executor):
    sizes: list[int] = []
    batcher = Batcher(engine, BatchingConfig(max_batch_size=16), executor, on_batch=sizes.append)
    xs = _requests(24)
    results = asyncio.run(_run_all(batcher, xs))
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_allclose(
            result["logits"], engine.infer({"input": x})["logits"], rtol=1e-5, atol=1e-6
        )
    assert sum(sizes) == sum(len(x) for x in xs)
    assert max(sizes) > 1, "no batch was formed"
    assert max(sizes) <= 16


def test_a_bad_request_fails_alone(engine, executor):
    batcher = Batcher(engine, BatchingConfig(max_batch_size=32), executor)
    xs = _requests(6)
    bad = np.zeros((2, 1, 28, 27), np.float32)
    nan = np.full((1, 1, 28, 28), np.nan, np.float32)
    results = asyncio.run(_run_all(batcher, [*xs[:3], bad, nan, *xs[3:]]))
    assert isinstance(results[3], InvalidInput) and isinstance(results[4], InvalidInput)
    good = results[:3] + results[5:]
    for x, result in zip(xs, good, strict=True):
        assert isinstance(result, dict)
        np.testing.assert_allclose(
            result["logits"], engine.infer({"input": x})["logits"], rtol=1e-5, atol=1e-6
        )


def test_batching_off_runs_each_request_alone(engine, executor):
    sizes: list[int] = []
    batcher = Batcher(engine, BatchingConfig(max_batch_size=1), executor, on_batch=sizes.append)
    xs = _requests(5)
    asyncio.run(_run_all(batcher, xs))
    assert sorted(sizes) == sorted(len(x) for x in xs)


def test_expired_requests_are_dropped_and_a_retired_batcher_still_answers(engine, executor):
    async def scenario() -> None:
        batcher = Batcher(engine, BatchingConfig(max_batch_size=8), executor)
        x = _requests(1)[0]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.infer({"input": x}), 1e-9)
        assert (await batcher.infer({"input": x}))["logits"].shape == (len(x), 10)
        await batcher.retire(grace_s=5)
        assert (await batcher.infer({"input": x}))["logits"].shape == (len(x), 10)
        await batcher.aclose()

    asyncio.run(scenario())


def test_batching_config_file(tmp_path):
    path = tmp_path / "batching.json"
    path.write_text(
        '{"default": {"max_batch_size": 8}, "models": {"cnn": {"max_queue_delay_us": 2000}}}'
    )
    default, models = load_batching(path, BatchingConfig())
    assert default.max_batch_size == 8
    assert models["cnn"] == BatchingConfig(max_batch_size=8, max_queue_delay_us=2000)
    toml = tmp_path / "batching.toml"
    toml.write_text("[models.mlp]\nmax_batch_size = 1\n")
    assert not load_batching(toml, BatchingConfig())[1]["mlp"].enabled
    path.write_text('{"default": {"max_batch": 8}}')
    with pytest.raises(ConfigError, match="unknown batching key"):
        load_batching(path, BatchingConfig())
    with pytest.raises(ConfigError):
        BatchingConfig(max_batch_size=0)


def test_server_never_mixes_versions_in_a_batch(tiny_registry, edge_server):
    """Concurrent requests to two versions of one model each get their own version's answer."""
    server = edge_server(Path(tiny_registry.url))
    engines = {v: load_engine(tiny_registry.open(f"tiny:{v}")) for v in ("1", "2")}
    x = np.random.default_rng(3).random((2, 1, 28, 28), dtype=np.float32)
    body, length = encode_request({"input": x})
    errors: list[str] = []

    def hammer(version: str) -> None:
        expected = engines[version].infer({"input": x})["logits"]
        with server.client() as http:
            for _ in range(30):
                response = http.post(
                    f"/v2/models/tiny/versions/{version}/infer",
                    content=body,
                    headers={HEADER_LENGTH: str(length)},
                )
                decoded = decode_response(
                    response.content, header_length=int(response.headers[HEADER_LENGTH])
                )
                if not np.allclose(decoded.outputs["logits"], expected, rtol=1e-5, atol=1e-5):
                    errors.append(f"v{version} got another version's logits")

    threads = [threading.Thread(target=hammer, args=(v,)) for v in ("1", "2", "1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
