"""`AsyncClient`: the async twin of `Client` (same policies, breakers, provenance).

Async transports (`AsyncEdge`) run on the event loop; sync ones (`Local`, `Lambda`, `SageMaker`,
`Edge`) run in a worker thread through `Threaded`. Hedged requests are real tasks: the loser is
cancelled, not abandoned.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from strato._cascade import cascade_reason, confidence_rows, merge_rows, rows_of
from strato._client import Classification, Inputs, Prediction, _Base, chunk_rows
from strato._errors import ConfigError, InferenceError, Timeout, TransportError, Unavailable
from strato._messages import InferRequest, InferResponse
from strato._routing import (
    Backend,
    ModelInfo,
    RouterBase,
    backoff,
    failure_kind,
    hedge_delay,
)
from strato._transports.base import AsyncTransport, Transport
from strato.policies import Cascade, LatencySLO, Policy, Retry

if TYPE_CHECKING:
    from collections.abc import Collection

    from strato._breaker import BreakerConfig

__all__ = ["AsyncClient", "Threaded"]

Outcome = tuple[InferResponse, str, int]
Tried = tuple[InferResponse | None, TransportError | None, int]
perf_counter = time.perf_counter


class Threaded(AsyncTransport):
    """A sync transport made awaitable: each call runs in a worker thread."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.name = transport.name
        self.tier = transport.tier
        self.payload_limit = transport.payload_limit

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        return await asyncio.to_thread(self.transport.infer, request, timeout=timeout)

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.transport.metadata, model, version=version)

    async def ready(self, model: str) -> bool:
        return await asyncio.to_thread(self.transport.ready, model)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.transport.close)

    def __repr__(self) -> str:
        return f"Threaded({self.transport!r})"


def _awaitable(transport: Transport | AsyncTransport | None) -> AsyncTransport | None:
    if transport is None or isinstance(transport, AsyncTransport):
        return transport
    return Threaded(transport)


class AsyncRouter(RouterBase):
    """`Router`, awaited."""

    async def call(
        self, backend: Backend, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Tried:
        tries = 0
        failed: TransportError | None = None
        breaker = backend.breaker
        while True:
            if failed is not None:
                if tries >= self.retry.attempts or not breaker.allow():
                    return None, failed, tries
                delay = backoff(self.retry, tries)
                if perf_counter() + delay >= deadline:
                    breaker.release()
                    return None, failed, tries
                await asyncio.sleep(delay)
            remaining = deadline - perf_counter()
            if remaining <= 0:
                breaker.release()
                return (
                    None,
                    failed or Timeout(f"{backend.name}: deadline passed", backend=backend.name),
                    tries,
                )
            tries += 1
            start = perf_counter()
            try:
                response = await backend.transport.infer(request, timeout=remaining)
            except TransportError as exc:
                breaker.failure()
                failed = exc
                continue
            except (InferenceError, asyncio.CancelledError):
                breaker.release()
                raise
            breaker.success()
            backend.latency.record(perf_counter() - start)
            return self.checked(backend, response, request, info), None, tries

    async def route(
        self, policy: Policy, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        if isinstance(policy, Cascade):
            return await self.cascade(policy, request, deadline, info)
        if isinstance(policy, LatencySLO):
            return await self.hedge(policy, request, deadline, info)
        plan = self._plans.get((id(policy), info.cloud_allowed)) or self.plan(
            policy, info, request.model
        )
        return await self.failover(plan, request, deadline, info)

    async def failover(
        self, backends: list[Backend], request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        reasons: list[str] = []
        attempts = 0
        error: TransportError | None = None
        skipped: list[Backend] = []
        last_resort = False
        queue = list(backends)
        while queue:
            backend = queue.pop(0)
            # allow() lazily, one backend at a time: in half-open it takes the probe slot
            if not last_resort and not backend.breaker.allow():
                skipped.append(backend)
                reasons.append(f"{backend.tier}-open")
                if not queue:
                    queue, skipped, last_resort = skipped, [], True
                continue
            try:
                response, failed, tries = await self.call(backend, request, deadline, info)
            except Unavailable as exc:  # another model version
                reasons.append(f"{backend.tier}-version")
                attempts, error = attempts + 1, exc
            else:
                attempts += tries
                if response is not None:
                    tier = f"{backend.tier}(open)" if last_resort else backend.tier
                    return response, "→".join([*reasons, tier]), attempts
                assert failed is not None
                error = failed
                reasons.append(f"{backend.tier}-{failure_kind(failed)}")
            if not queue and skipped:
                queue, skipped, last_resort = skipped, [], True
        raise error or Unavailable("no backend to try", backend=None)

    async def cascade(
        self, policy: Cascade, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        edges = [b for b in self.backends if b.tier == "edge"]
        clouds = [b for b in self.backends if b.tier == "cloud"] if info.cloud_allowed else []
        response, reason, attempts = await self.failover(edges + clouds, request, deadline, info)
        if not edges or response.served_by not in {b.name for b in edges}:
            return response, reason, attempts
        confidence, rows, threshold = confidence_rows(response, policy, info)
        reason = cascade_reason(confidence, rows, threshold)
        if not len(rows):
            return response, reason, attempts
        if not clouds:
            note = "cloud: never" if not info.cloud_allowed else "no cloud tier"
            return response, f"{reason}, {note}: edge answer kept", attempts
        escalated = rows_of(request, rows) if len(rows) < len(confidence) else request
        try:
            cloud, cloud_reason, tries = await self.failover(clouds, escalated, deadline, info)
        except TransportError as exc:
            return response, f"{reason}, cloud-{failure_kind(exc)}: edge answer kept", attempts + 1
        if escalated is request:
            return cloud, f"{reason}→{cloud_reason}", attempts + tries
        return merge_rows(response, cloud, rows), f"{reason}→{cloud_reason}", attempts + tries

    async def hedge(
        self, policy: LatencySLO, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        deadline = min(deadline, perf_counter() + policy.deadline_ms / 1e3)
        edge = next((b for b in self.backends if b.tier == "edge"), None)
        cloud = (
            next((b for b in self.backends if b.tier == "cloud"), None)
            if info.cloud_allowed
            else None
        )
        if edge is None or cloud is None or not edge.breaker.allow():
            return await self.failover(
                [b for b in (edge, cloud) if b is not None], request, deadline, info
            )
        hedge_after = hedge_delay(policy, edge, deadline)
        edge_task = asyncio.ensure_future(self.call(edge, request, deadline, info))
        done, _ = await asyncio.wait({edge_task}, timeout=hedge_after)
        if done:
            response, failed, tries = edge_task.result()
            if response is not None:
                return response, "edge", tries
            assert failed is not None
            answer, reason, more = await self.failover([cloud], request, deadline, info)
            return answer, f"edge-{failure_kind(failed)}→{reason}", tries + more
        cloud_task = asyncio.ensure_future(self.call(cloud, request, deadline, info))
        try:
            return await self.first_answer(edge_task, cloud_task, hedge_after, deadline)
        finally:
            for task in (edge_task, cloud_task):
                task.cancel()

    async def first_answer(
        self,
        edge_task: asyncio.Future[Tried],
        cloud_task: asyncio.Future[Tried],
        hedge_after: float,
        deadline: float,
    ) -> Outcome:
        pending: set[asyncio.Future[Tried]] = {edge_task, cloud_task}
        error: TransportError | None = None
        after = f"hedge after {hedge_after * 1e3:.0f}ms"
        while pending:
            timeout = max(0.0, deadline - perf_counter())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                try:
                    response, failed, _ = task.result()
                except TransportError as exc:
                    response, failed = None, exc
                if response is not None:
                    winner = "edge" if task is edge_task else "cloud"
                    return response, f"{after}: {winner} won", 2
                error = failed
        if error is not None and not pending:
            raise error
        raise Timeout(f"no tier answered within the deadline ({after})", backend=None)


class AsyncClient(_Base):
    """The async twin of `Client`.

    >>> async with AsyncClient(edge=AsyncEdge("http://127.0.0.1:8000"), cloud=Lambda("strato-infer")) as client:
    ...     pred = await client.predict("digits-mlp", x)
    """

    def __init__(
        self,
        edge: Transport | AsyncTransport | None = None,
        cloud: Transport | AsyncTransport | None = None,
        *,
        policy: Policy | None = None,
        timeout: float = 10.0,
        retry: Retry | None = None,
        breaker: BreakerConfig | None = None,
        require_same_version: bool = False,
        cloud_never: bool | Collection[str] = False,
    ) -> None:
        backends = self._configure(
            _awaitable(edge), _awaitable(cloud), policy, timeout, cloud_never, breaker
        )
        self.router = AsyncRouter(
            backends, retry=retry or Retry(), require_same_version=require_same_version
        )

    @property
    def backends(self) -> list[Backend]:
        return self.router.backends

    async def metadata(self, model: str) -> dict[str, Any]:
        if model not in self._metadata:
            await self._info(model)
        return self._metadata[model]

    async def _info(self, model: str) -> ModelInfo:
        info = self._models.get(model)
        if info is not None:
            return info
        error: Exception | None = None
        for backend in sorted(self.backends, key=lambda b: b.tier != "edge"):
            try:
                metadata = await backend.transport.metadata(model)
            except (TransportError, InferenceError) as exc:
                error = exc
                continue
            return self._remember(model, metadata, backend.tier == "edge")
        assert error is not None
        raise error

    async def predict(
        self,
        model: str,
        x: Inputs,
        *,
        version: str | None = None,
        timeout: float | None = None,
        policy: Policy | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        start = perf_counter()
        info = self._models.get(model) or await self._info(model)
        request = InferRequest(model, self._named(model, x, info), version, request_id)
        deadline = start + (timeout or self.timeout)
        outcome = await self.router.route(policy or self.policy, request, deadline, info)
        return self._prediction(outcome, start)

    async def predict_many(
        self,
        model: str,
        x: Inputs,
        *,
        rows: int | None = None,
        concurrency: int = 4,
        **options: Any,
    ) -> list[Prediction]:
        """Chunks within every tier's payload limit, `concurrency` of them in flight."""
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        inputs = self._named(model, x, await self._info(model))
        total = len(next(iter(inputs.values())))
        step = rows or chunk_rows(inputs, min(b.transport.payload_limit for b in self.backends))
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Prediction:
            async with gate:
                return await self.predict(
                    model, {k: v[i : i + step] for k, v in inputs.items()}, **options
                )

        return list(await asyncio.gather(*(one(i) for i in range(0, total, step))))

    async def classify(
        self, model: str, x: Inputs, *, version: str | None = None, **options: Any
    ) -> Classification:
        return self._classification(model, await self.predict(model, x, version=version, **options))

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
