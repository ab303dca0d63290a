"""`Client`: one `predict()` for every tier; the policy picks the tier, the Prediction says which.

The routing itself is the sans-IO core in `strato._routing`; `Client` is its blocking driver
(calls in this thread, hedge legs in a small thread pool), `AsyncClient` its awaiting twin.

>>> client = Client(edge=Edge("http://127.0.0.1:8000"), cloud=Lambda("strato-infer"))
>>> pred = client.predict("digits-mlp", x)
>>> pred.served_by, pred.tier, pred.model_version, pred.route_reason, pred.latency_ms
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._breaker import BreakerConfig
from strato._cascade import softmax
from strato._errors import ConfigError, TransportError
from strato._inference import Classification, InferRequest, Prediction
from strato._outbox import UNNAMED, FlushReport, Outbox, Queued
from strato._payload import row_chunks
from strato._route_steps import Call, Cancel, Finished, Metadata, Sleep, Start, Wait
from strato._routing import Router, named

if TYPE_CHECKING:
    import os
    from collections.abc import Collection

    from strato._route_steps import Backend, ModelInfo, Steps, T
    from strato._transports.base import Transport
    from strato.policies import Policy, Retry

__all__ = ["Classification", "Client", "Inputs", "Prediction", "chunk_rows", "softmax"]

Inputs = np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]]


def chunk_rows(inputs: Mapping[str, np.ndarray[Any, Any]], payload_limit: int) -> int:
    """How many rows of `inputs` fit one request body under `payload_limit` (binary tensors)."""
    row_bytes = sum(int(array[:1].nbytes) for array in inputs.values()) or 1
    return max(1, (payload_limit - 64 * 1024) // row_bytes)


class ClientBase:
    """What `Client` and `AsyncClient` share around the core: settings, chunking, labels."""

    router: Router

    @property
    def backends(self) -> list[Backend]:
        """The client's backends (edge first), each with its breaker and latencies."""
        return self.router.backends

    @property
    def policy(self) -> Policy:
        """The policy used when a call names none."""
        return self.router.policy

    def _chunks(
        self, model: str, x: Inputs, info: ModelInfo, rows: int | None
    ) -> list[dict[str, np.ndarray[Any, Any]]]:
        inputs = named(model, x, info)
        limits = [b.transport.payload_limit for b in self.backends if b.limited]
        step = rows or (
            chunk_rows(inputs, min(limits)) if limits else len(next(iter(inputs.values())))
        )
        if step < 1:
            raise ConfigError("rows must be at least 1")
        return row_chunks(inputs, step)

    def _classification(self, model: str, prediction: Prediction) -> Classification:
        info = self.router.models[model]
        if info.task is not None and info.task != "classification":
            raise ConfigError(
                f"classify: {model}'s task is {info.task!r}, not a classifier; use predict()"
            )
        probabilities = softmax(prediction.output, info.temperature)
        indices = probabilities.argmax(axis=-1)
        labels = info.labels
        names = [labels[i] if i < len(labels) else str(i) for i in indices.ravel().tolist()]
        return Classification(names, probabilities, indices, prediction)


class Client(ClientBase):
    """Route each call to the edge or the cloud, by `policy` (default `EdgeFirst`).

    >>> client = Client(edge=Local(".strato/registry"))
    >>> client.predict("digits-mlp", x).served_by
    'local'
    """

    def __init__(
        self,
        edge: Transport | None = None,
        cloud: Transport | None = None,
        *,
        policy: Policy | None = None,
        timeout: float = 10.0,
        retry: Retry | None = None,
        breaker: BreakerConfig | None = None,
        require_same_version: bool = False,
        cloud_never: bool | Collection[str] = False,
        outbox: str | os.PathLike[str] | Outbox | None = None,
    ) -> None:
        self.router = Router(
            edge,
            cloud,
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
        self.outbox = outbox if isinstance(outbox, Outbox) or outbox is None else Outbox(outbox)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- the driver ----------------------------------------------------------------------
    def _drive(self, steps: Steps[T], cancelled: threading.Event | None = None) -> T:
        """Carry out the core's commands until it returns (blocking)."""
        try:
            command = next(steps)
            while True:
                if cancelled is not None and cancelled.is_set():
                    steps.close()  # an abandoned hedge leg stops at its next step
                    return None  # type: ignore[return-value]
                if type(command) is Call:
                    try:
                        answer = command.backend.transport.infer(
                            command.request, timeout=command.timeout
                        )
                    except BaseException as exc:
                        command = steps.throw(exc)
                        continue
                    command = steps.send(answer)
                else:
                    try:
                        outcome = self._perform(command)
                    except BaseException as exc:
                        command = steps.throw(exc)
                        continue
                    command = steps.send(outcome)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _perform(self, command: Any) -> Any:
        if type(command) is Metadata:
            return command.backend.transport.metadata(command.model)
        if type(command) is Sleep:
            time.sleep(command.seconds)
            return None
        if type(command) is Start:
            leg = Leg()
            leg.future = self._hedge_pool().submit(self._drive, command.steps, leg.cancelled)
            return leg
        if type(command) is Wait:
            legs = {leg.future: leg for leg in command.handles}
            done, _ = wait(legs, timeout=command.timeout, return_when=FIRST_COMPLETED)
            return [_finished(legs[future]) for future in legs if future in done]
        if type(command) is Cancel:
            for leg in command.handles:
                leg.cancelled.set()  # a running leg stops at its next step
                leg.future.cancel()  # one not started yet never runs
            return None
        raise TypeError(f"unknown routing command {command!r}")

    def _hedge_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=64, thread_name_prefix="strato-hedge"
                    )
        return self._pool

    # --- model metadata ------------------------------------------------------------------
    def metadata(self, model: str) -> dict[str, Any]:
        """OIP metadata of `model`, from the edge tier first (cached)."""
        if model not in self.router.metadata:
            self._drive(self.router.info(model))
        return self.router.metadata[model]

    # --- calls ---------------------------------------------------------------------------
    def predict(
        self,
        model: str,
        x: Inputs,
        *,
        version: str | None = None,
        timeout: float | None = None,
        policy: Policy | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        """One answer for `x` (ndarray for single-input models, else a dict name → ndarray).

        Rows that do not fit a transport's payload limit go in several requests (`attempts`
        counts them) and come back as one answer.
        """
        router = self.router
        hop = router.direct(model, x, version, timeout, policy, request_id)
        if hop is None:
            return self._drive(router.predict(model, x, version, timeout, policy, request_id))
        backend, request, start, deadline, _, _ = hop
        try:  # the hot path: the core planned one call; perform it, hand the answer back
            response = backend.transport.infer(request, timeout=deadline - start)
        except BaseException as exc:
            return self._drive(router.resume(hop, exc))
        return router.answered(hop, response) or self._drive(router.resume(hop, None, response))

    def predict_many(
        self, model: str, x: Inputs, *, rows: int | None = None, **options: Any
    ) -> list[Prediction]:
        """One `Prediction` per chunk of `rows` rows (default: what fits every tier's limit)."""
        info = self._drive(self.router.info(model, options.get("policy")))
        return [
            self.predict(model, chunk, **options) for chunk in self._chunks(model, x, info, rows)
        ]

    def classify(
        self, model: str, x: Inputs, *, version: str | None = None, **options: Any
    ) -> Classification:
        """Labels and calibrated probabilities (the manifest's temperature) for each row.

        A model whose manifest task is not `classification` is a `ConfigError`.
        """
        return self._classification(model, self.predict(model, x, version=version, **options))

    # --- outbox --------------------------------------------------------------------------
    def submit(
        self, model: str, x: Inputs, *, key: str | None = None, version: str | None = None
    ) -> Prediction | Queued:
        """Predict now if a tier answers; otherwise keep the request in the outbox under `key`.

        Bad input raises as in `predict` and is never queued.
        """
        outbox = self._need_outbox()
        key = key or uuid.uuid4().hex
        if outbox.state(key) is not None:
            return Queued(key, model)
        try:
            return self.predict(model, x, version=version, request_id=key)
        except TransportError:
            pass
        info = self.router.models.get(model)
        inputs = named(model, x, info) if info is not None else None
        if inputs is None:  # metadata never reached us: names resolve at flush time
            inputs = dict(x) if isinstance(x, Mapping) else {UNNAMED: x}
        outbox.put(key, InferRequest(model, inputs, version, key))
        return Queued(key, model)

    def flush(self, *, limit: int = 1000) -> FlushReport:
        """Send what the outbox holds, each request once; returns key → Prediction of those
        answered, with `.failed` (refused or dead-lettered), `.retrying` and `.waiting`.

        A request the tiers fail on while they answer health is retried with backoff, then
        dead-lettered (`outbox.failed()`); when no tier answers, everything stays queued.
        """
        outbox = self._need_outbox()

        def send(request: InferRequest) -> Prediction:
            inputs: Inputs = request.inputs.get(UNNAMED, request.inputs)
            return self.predict(
                request.model, inputs, version=request.version, request_id=request.id
            )

        def alive(model: str) -> bool:
            return any(backend.transport.ready(model) for backend in self.backends)

        return outbox.flush(send, alive=alive, limit=limit)

    def _need_outbox(self) -> Outbox:
        if self.outbox is None:
            raise ConfigError("submit()/flush() need Client(outbox=PATH)")
        return self.outbox

    def close(self) -> None:
        """Stop hedge threads and close every transport (and the outbox)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for backend in self.backends:
            backend.transport.close()
        if self.outbox is not None:
            self.outbox.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(edge={self.edge!r}, cloud={self.cloud!r}, policy={self.policy!r})"


class Leg:
    """A hedge leg run by `Client`: its future in the hedging pool and its stop flag."""

    __slots__ = ("cancelled", "future")

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.future: Future[Any]


def _finished(leg: Leg) -> Finished:
    error = leg.future.exception()
    return Finished(leg, None if error is not None else leg.future.result(), error)
