"""`AsyncClient`: the async twin of `Client` — the same routing core, driven with awaits.

Async transports (`AsyncEdge`) run on the event loop; sync ones (`Local`, `Lambda`, `SageMaker`,
`Edge`) run in a worker thread through `Threaded`. Hedge legs are real tasks: the loser is
cancelled, not abandoned.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from strato._breaker import BreakerConfig
from strato._client import ClientBase, Inputs
from strato._errors import ConfigError
from strato._route_steps import Call, Cancel, Finished, Metadata, Sleep, Start, Wait
from strato._routing import Router
from strato._transports.base import AsyncTransport, Transport

if TYPE_CHECKING:
    from collections.abc import Collection

    from strato._inference import Classification, InferRequest, InferResponse, Prediction
    from strato._route_steps import Steps, T
    from strato.policies import Policy, Retry

__all__ = ["AsyncClient", "Threaded"]


class Threaded(AsyncTransport):
    """A sync transport made awaitable: each call runs in a worker thread."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.name = transport.name
        self.tier = transport.tier
        self.payload_limit = transport.payload_limit
        self.in_process = getattr(transport, "in_process", False)
        self.url = getattr(transport, "url", None)

    def max_tensor_bytes(self, inputs: int) -> int:
        """The wrapped transport's budget."""
        return self.transport.max_tensor_bytes(inputs)

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


def _awaitable(transport: Any) -> Any:
    if isinstance(transport, Transport):
        return Threaded(transport)
    return transport  # None, an AsyncTransport, or a mistake the router names


class AsyncClient(ClientBase):
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
        self.router = Router(
            _awaitable(edge),
            _awaitable(cloud),
            policy=policy,
            timeout=timeout,
            retry=retry,
            breaker=breaker or BreakerConfig(),
            require_same_version=require_same_version,
            cloud_never=cloud_never,
        )
        self.edge = edge
        self.cloud = cloud
        self.timeout = timeout

    # --- the driver ----------------------------------------------------------------------
    async def _drive(self, steps: Steps[T]) -> T:
        """Carry out the core's commands until it returns (awaiting)."""
        try:
            command = next(steps)
            while True:
                try:
                    if type(command) is Call:
                        outcome = await command.backend.transport.infer(
                            command.request, timeout=command.timeout
                        )
                    else:
                        outcome = await self._perform(command)
                except BaseException as exc:  # cancelled too: the core frees the breaker slot
                    command = steps.throw(exc)
                    continue
                command = steps.send(outcome)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _perform(self, command: Any) -> Any:
        if type(command) is Metadata:
            return await command.backend.transport.metadata(command.model)
        if type(command) is Sleep:
            await asyncio.sleep(command.seconds)
            return None
        if type(command) is Start:
            return asyncio.ensure_future(self._drive(command.steps))
        if type(command) is Wait:
            done, _ = await asyncio.wait(
                command.handles, timeout=command.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            return [_finished(task) for task in command.handles if task in done]
        if type(command) is Cancel:
            for task in command.handles:
                task.cancel()
            return None
        raise TypeError(f"unknown routing command {command!r}")

    # --- calls ---------------------------------------------------------------------------
    async def metadata(self, model: str) -> dict[str, Any]:
        """OIP metadata of `model`, from the edge tier first (cached)."""
        if model not in self.router.metadata:
            await self._drive(self.router.info(model))
        return self.router.metadata[model]

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
        """One answer for `x`, as `Client.predict`."""
        router = self.router
        hop = router.direct(model, x, version, timeout, policy, request_id)
        if hop is None:
            return await self._drive(router.predict(model, x, version, timeout, policy, request_id))
        backend, request, start, deadline, _, _ = hop
        try:  # the hot path: the core planned one call; perform it, hand the answer back
            response = await backend.transport.infer(request, timeout=deadline - start)
        except BaseException as exc:
            return await self._drive(router.resume(hop, exc))
        prediction = router.answered(hop, response)
        if prediction is None:  # another version answered: the core goes on
            prediction = await self._drive(router.resume(hop, None, response))
        return prediction

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
        info = await self._drive(self.router.info(model, options.get("policy")))
        gate = asyncio.Semaphore(concurrency)

        async def one(chunk: Inputs) -> Prediction:
            async with gate:
                return await self.predict(model, chunk, **options)

        chunks = self._chunks(model, x, info, rows)
        return list(await asyncio.gather(*(one(chunk) for chunk in chunks)))

    async def classify(
        self, model: str, x: Inputs, *, version: str | None = None, **options: Any
    ) -> Classification:
        """Labels and calibrated probabilities, as `Client.classify`."""
        return self._classification(model, await self.predict(model, x, version=version, **options))

    async def aclose(self) -> None:
        """Close every transport."""
        for backend in self.backends:
            await backend.transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _finished(task: asyncio.Future[Any]) -> Finished:
    if task.cancelled():
        return Finished(task, None, asyncio.CancelledError())
    error = task.exception()
    return Finished(task, None if error is not None else task.result(), error)
