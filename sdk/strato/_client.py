"""`Client`: one `predict()` for every tier; the policy picks the tier, the Prediction says which.

>>> client = Client(edge=Edge("http://127.0.0.1:8000"), cloud=Lambda("strato-infer"))
>>> pred = client.predict("digits-mlp", x)
>>> pred.served_by, pred.model_version, pred.route_reason, pred.latency_ms
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._breaker import BreakerConfig
from strato._cascade import softmax
from strato._errors import ConfigError, InferenceError, InvalidInput, TransportError
from strato._messages import InferRequest
from strato._outbox import UNNAMED, Outbox, Queued
from strato._routing import Backend, ModelInfo, Router
from strato.policies import EdgeFirst, Policy, Retry

if TYPE_CHECKING:
    import os

    from strato._messages import InferResponse
    from strato._transports.base import Transport

__all__ = ["Classification", "Client", "Prediction", "chunk_rows", "softmax"]

Inputs = np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]]
perf_counter = time.perf_counter


@dataclass(slots=True)
class Prediction:
    """What came back, and where from: `served_by` is the transport's name (`edge+lambda` when a
    cascade merged rows from both), `route_reason` why it went there."""

    outputs: dict[str, np.ndarray[Any, Any]]
    served_by: str
    model_name: str
    model_version: str
    latency_ms: float
    precision: str | None = None
    route_reason: str = ""
    attempts: int = 1

    @property
    def output(self) -> np.ndarray[Any, Any]:
        """The first (for classifiers, the only) output."""
        return next(iter(self.outputs.values()))


@dataclass(slots=True)
class Classification:
    labels: list[str]
    probabilities: np.ndarray[Any, Any]
    indices: np.ndarray[Any, Any]
    prediction: Prediction = field(repr=False)

    @property
    def confidence(self) -> np.ndarray[Any, Any]:
        return np.asarray(self.probabilities.max(axis=-1))


def chunk_rows(inputs: Mapping[str, np.ndarray[Any, Any]], payload_limit: int) -> int:
    """How many rows of `inputs` fit one request body under `payload_limit` (binary tensors)."""
    row_bytes = sum(int(array[:1].nbytes) for array in inputs.values()) or 1
    return max(1, (payload_limit - 64 * 1024) // row_bytes)


class _Base:
    """What `Client` and `AsyncClient` share: settings, model info, inputs, classification."""

    def _configure(
        self,
        edge: Any,
        cloud: Any,
        policy: Policy | None,
        timeout: float,
        cloud_never: bool | Collection[str],
        breaker: BreakerConfig | None,
    ) -> list[Backend]:
        if edge is None and cloud is None:
            raise ConfigError("Client needs an edge or a cloud transport (or both)")
        if edge is not None and edge.tier != "edge":
            raise ConfigError(
                f"edge= takes an edge-tier transport, got {edge!r} (tier {edge.tier})"
            )
        if cloud is not None and cloud.tier != "cloud":
            raise ConfigError(
                f"cloud= takes a cloud-tier transport, got {cloud!r} (tier {cloud.tier})"
            )
        self.edge = edge
        self.cloud = cloud
        self.policy = policy or EdgeFirst()
        self.timeout = timeout
        self._cloud_never = cloud_never
        self._models: dict[str, ModelInfo] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        config = breaker or BreakerConfig()
        return [Backend(t, config) for t in (edge, cloud) if t is not None]

    def _private(self, model: str) -> bool:
        never = self._cloud_never
        return never if isinstance(never, bool) else model in never

    def _remember(self, model: str, metadata: dict[str, Any], from_edge: bool) -> ModelInfo:
        info = ModelInfo.from_metadata(metadata, from_edge=from_edge, private=self._private(model))
        self._metadata[model] = metadata
        self._models[model] = info
        return info

    @staticmethod
    def _named(model: str, x: Inputs, info: ModelInfo) -> dict[str, np.ndarray[Any, Any]]:
        if isinstance(x, np.ndarray):
            names = info.input_names
            if len(names) != 1:
                raise InvalidInput(f"{model} takes {len(names)} inputs {names}; pass a dict")
            return {names[0]: x}
        if not isinstance(x, Mapping):
            raise InvalidInput(
                f"inputs must be an ndarray or a dict of them, got {type(x).__name__}"
            )
        return x if isinstance(x, dict) else dict(x)

    @staticmethod
    def _prediction(outcome: tuple[InferResponse, str, int], start: float) -> Prediction:
        response, reason, attempts = outcome
        return Prediction(
            response.outputs,
            response.served_by,
            response.model_name,
            response.model_version,
            (perf_counter() - start) * 1e3,
            response.precision,
            reason,
            attempts,
        )

    def _classification(self, model: str, prediction: Prediction) -> Classification:
        info = self._models[model]
        probabilities = softmax(prediction.output, info.temperature)
        indices = probabilities.argmax(axis=-1)
        labels = info.labels
        names = [labels[i] if i < len(labels) else str(i) for i in indices.ravel().tolist()]
        return Classification(names, probabilities, indices, prediction)


class Client(_Base):
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
        outbox: str | os.PathLike[str] | None = None,
    ) -> None:
        backends = self._configure(edge, cloud, policy, timeout, cloud_never, breaker)
        self.router = Router(
            backends, retry=retry or Retry(), require_same_version=require_same_version
        )
        self.outbox = Outbox(outbox) if outbox is not None else None

    @property
    def backends(self) -> list[Backend]:
        return self.router.backends

    # --- model metadata ------------------------------------------------------------------
    def metadata(self, model: str) -> dict[str, Any]:
        """OIP metadata of `model`, from the edge tier first (cached)."""
        if model not in self._metadata:
            self._info(model)
        return self._metadata[model]

    def _info(self, model: str) -> ModelInfo:
        info = self._models.get(model)
        if info is not None:
            return info
        error: Exception | None = None
        for backend in sorted(self.backends, key=lambda b: b.tier != "edge"):
            try:
                metadata = backend.transport.metadata(model)
            except (TransportError, InferenceError) as exc:
                error = exc
                continue
            return self._remember(model, metadata, backend.tier == "edge")
        assert error is not None
        raise error

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
        """One answer for `x` (ndarray for single-input models, else a dict name → ndarray)."""
        start = perf_counter()
        info = self._models.get(model) or self._info(model)
        # Hot path: an ndarray for a single-input model needs no checks beyond the type.
        single = info.single_input
        inputs = {single: x} if single and type(x) is np.ndarray else self._named(model, x, info)
        request = InferRequest(model, inputs, version, request_id)
        outcome = self.router.route(
            policy or self.policy, request, start + (timeout or self.timeout), info
        )
        return self._prediction(outcome, start)

    def predict_many(
        self, model: str, x: Inputs, *, rows: int | None = None, **options: Any
    ) -> list[Prediction]:
        """Predict a large batch in chunks (axis 0) that fit every tier's payload limit."""
        inputs = self._named(model, x, self._info(model))
        total = len(next(iter(inputs.values())))
        limit = min(b.transport.payload_limit for b in self.backends)
        step = rows or chunk_rows(inputs, limit)
        return [
            self.predict(model, {k: v[i : i + step] for k, v in inputs.items()}, **options)
            for i in range(0, total, step)
        ]

    def classify(
        self, model: str, x: Inputs, *, version: str | None = None, **options: Any
    ) -> Classification:
        """Labels and calibrated probabilities (the manifest's temperature) for each row."""
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
        inputs = self._named(model, x, self._models[model]) if model in self._models else None
        if inputs is None:  # metadata never reached us: names resolve at flush time
            inputs = {UNNAMED: x} if isinstance(x, np.ndarray) else dict(x)
        outbox.put(key, InferRequest(model, inputs, version, key))
        return Queued(key, model)

    def flush(self, *, limit: int = 1000) -> dict[str, Prediction]:
        """Send what the outbox holds, each request once; returns key → Prediction of those sent.

        Stops at the first request no tier answers (it stays queued, as do the rest).
        """
        outbox = self._need_outbox()
        answered: dict[str, Prediction] = {}
        claimed = outbox.claim(limit)
        for index, (key, request) in enumerate(claimed):
            inputs: Inputs = request.inputs.get(UNNAMED, request.inputs)
            try:
                prediction = self.predict(
                    request.model, inputs, version=request.version, request_id=key
                )
            except TransportError:
                for rest, _ in claimed[index:]:
                    outbox.release(rest)
                break
            except InferenceError as exc:
                outbox.failed(key, str(exc))
                continue
            outbox.answered(key, prediction.served_by, prediction.model_version)
            answered[key] = prediction
        return answered

    def _need_outbox(self) -> Outbox:
        if self.outbox is None:
            raise ConfigError("submit()/flush() need Client(outbox=PATH)")
        return self.outbox

    def close(self) -> None:
        self.router.close()
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
