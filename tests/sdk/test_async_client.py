"""`AsyncClient`: the same routing, awaited; hedged losers are cancelled tasks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from strato import AsyncClient, AsyncEdge, InvalidInput, Lambda, Local, Retry, policies

pytestmark = pytest.mark.timeout(60)


def run(coroutine):
    return asyncio.run(coroutine)


def test_async_edge_first_and_failover(edge_standin, cloud_standin, digit_batch):
    async def main() -> None:
        cloud = Lambda("strato-infer", endpoint_url=cloud_standin.url)
        async with AsyncClient(
            edge=AsyncEdge(edge_standin.url), cloud=cloud, retry=Retry(attempts=1)
        ) as client:
            first = await client.predict("tiny", digit_batch)
            assert (first.served_by, first.route_reason, first.model_version) == (
                "edge",
                "edge",
                "2",
            )
            edge_standin.fail(503)
            moved = await client.predict("tiny", digit_batch)
            assert (moved.served_by, moved.route_reason) == ("lambda", "edge-unavailable→cloud")
            with pytest.raises(InvalidInput):
                await client.predict("tiny", digit_batch[:, :, :9])
            answers = await asyncio.gather(
                *(client.predict("tiny", digit_batch) for _ in range(10))
            )
            assert {a.served_by for a in answers} == {"edge"}

    run(main())


def test_async_hedge_cancels_the_slow_edge(edge_standin, cloud_standin, digit_batch):
    async def main() -> None:
        cloud = Lambda("strato-infer", endpoint_url=cloud_standin.url)
        async with AsyncClient(edge=AsyncEdge(edge_standin.url), cloud=cloud) as client:
            await client.metadata("tiny")
            edge_standin.delay_s = 1.0
            slo = policies.LatencySLO(deadline_ms=3000, hedge_after_ms=50)
            pred = await client.predict("tiny", digit_batch, policy=slo)
            assert (pred.served_by, pred.route_reason) == ("lambda", "hedge after 50ms: cloud won")
            assert pred.latency_ms < 3000
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.sleep(0)
            assert all(t.done() or t.cancelling() for t in pending)  # the edge call was cancelled

    run(main())


def test_async_cascade_and_predict_many(tiny_registry, cloud_standin, digit_batch):
    async def main() -> None:
        cloud = Lambda("strato-infer", endpoint_url=cloud_standin.url)
        async with AsyncClient(
            edge=Local(tiny_registry), cloud=cloud, policy=policies.Cascade(threshold=1.0)
        ) as client:
            pred = await client.predict("tiny", digit_batch[:1])
            assert pred.served_by == "lambda" and pred.route_reason.startswith("cascade p=")
            batch = np.random.default_rng(2).random((9, 1, 28, 28), dtype=np.float32)
            chunks = await client.predict_many("tiny", batch, rows=4, policy=policies.EdgeOnly())
            assert [len(c.output) for c in chunks] == [4, 4, 1]
            result = await client.classify("tiny", digit_batch, policy=policies.EdgeOnly())
            assert len(result.labels) == 4

    run(main())


def test_async_breaker_opens_and_closes(edge_standin, cloud_standin, digit_batch):
    from strato import BreakerConfig

    async def main() -> None:
        cloud = Lambda("strato-infer", endpoint_url=cloud_standin.url)
        breaker = BreakerConfig(failures=2, window_s=30, cooldown_s=1.0, successes=1)
        async with AsyncClient(
            edge=AsyncEdge(edge_standin.url), cloud=cloud, retry=Retry(attempts=1), breaker=breaker
        ) as client:
            await client.metadata("tiny")
            edge_standin.fail(503, times=2)
            for _ in range(2):
                assert (await client.predict("tiny", digit_batch)).served_by == "lambda"
            skipped = await client.predict("tiny", digit_batch)
            assert skipped.route_reason == "edge-open→cloud"
            await asyncio.sleep(1.05)
            back = await client.predict("tiny", digit_batch)
            assert (back.served_by, back.route_reason) == ("edge", "edge")
            assert client.backends[0].breaker.state == "closed"
            assert client.backends[1].breaker.state == "closed"

    run(main())
