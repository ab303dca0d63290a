"""`Client`: one `predict()` for every tier; the policy picks the tier, the Prediction says which.

This module holds the spine's client (`Local` and plain edge-then-cloud failover); the routing
policies live in `_routing.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ConfigError, InvalidInput, TransportError
from ._messages import InferRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._messages import InferResponse
    from ._transports.base import Transport

__all__ = ["Classification", "Client", "Prediction", "softmax"]


def softmax(logits: np.ndarray[Any, Any], temperature: float = 1.0) -> np.ndarray[Any, Any]:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


@dataclass(slots=True)
class Prediction:
    """What came back, and where from: `served_by` is the transport's name."""

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


class Client:
    """Route each call to the edge or the cloud.

    >>> client = Client(edge=Local(".strato/registry"))
    >>> client.predict("digits-mlp", x).served_by
    'local'
    """

    def __init__(
        self,
        edge: Transport | None = None,
        cloud: Transport | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        if edge is None and cloud is None:
            raise ConfigError("Client needs an edge or a cloud transport (or both)")
        self.edge = edge
        self.cloud = cloud
        self.timeout = timeout
        self._tiers = [t for t in (edge, cloud) if t is not None]
        self._metadata: dict[str, dict[str, Any]] = {}

    # --- inputs --------------------------------------------------------------------------
    def metadata(self, model: str) -> dict[str, Any]:
        """OIP metadata of `model` from the first tier that answers (cached)."""
        cached = self._metadata.get(model)
        if cached is not None:
            return cached
        error: Exception | None = None
        for tier in self._tiers:
            try:
                cached = tier.metadata(model)
            except TransportError as exc:
                error = exc
                continue
            self._metadata[model] = cached
            return cached
        assert error is not None
        raise error

    def _inputs(
        self, model: str, x: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        if isinstance(x, np.ndarray):
            names = [spec["name"] for spec in self.metadata(model)["inputs"]]
            if len(names) != 1:
                raise InvalidInput(f"{model} takes {len(names)} inputs {names}; pass a dict")
            return {names[0]: x}
        if not isinstance(x, dict):
            x = dict(x)
        return x

    # --- calls ---------------------------------------------------------------------------
    def predict(
        self,
        model: str,
        x: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]],
        *,
        version: str | None = None,
        timeout: float | None = None,
    ) -> Prediction:
        request = InferRequest(model, self._inputs(model, x), version)
        start = time.perf_counter()
        response, reason, attempts = self._route(request, timeout or self.timeout)
        return Prediction(
            response.outputs,
            response.served_by,
            response.model_name,
            response.model_version,
            (time.perf_counter() - start) * 1e3,
            response.precision,
            reason,
            attempts,
        )

    def _route(self, request: InferRequest, timeout: float) -> tuple[InferResponse, str, int]:
        last: TransportError | None = None
        for attempt, tier in enumerate(self._tiers, start=1):
            try:
                response = tier.infer(request, timeout=timeout)
            except TransportError as exc:
                last = exc
                continue
            reason = tier.tier if last is None else f"{last.backend or 'edge'}-failed→{tier.tier}"
            return response, reason, attempt
        assert last is not None
        raise last

    def classify(
        self,
        model: str,
        x: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]],
        *,
        version: str | None = None,
    ) -> Classification:
        """Labels and calibrated probabilities (the manifest's temperature) for each row."""
        prediction = self.predict(model, x, version=version)
        parameters = self.metadata(model).get("parameters", {})
        temperature = float(parameters.get("calibration", {}).get("temperature", 1.0))
        probabilities = softmax(prediction.output, temperature)
        indices = probabilities.argmax(axis=-1)
        labels = list(parameters.get("labels") or [])
        names = [labels[i] if i < len(labels) else str(i) for i in indices.ravel().tolist()]
        return Classification(names, probabilities, indices, prediction)

    def close(self) -> None:
        for tier in self._tiers:
            tier.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
