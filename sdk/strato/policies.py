"""Routing policies: which tier answers a call, and when another one is asked.

A policy is a small frozen value; the router (`strato._routing`) carries it out with per-backend
circuit breakers, retries (exponential backoff, full jitter, retryable errors only, within the
call's deadline), the privacy gate (`cloud: never`) and the same-version check.

>>> from strato import Client, Edge, Lambda, policies
>>> client = Client(edge=Edge("http://127.0.0.1:8000"), cloud=Lambda("strato-infer"),
...                 policy=policies.Cascade(threshold=0.8))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from strato._breaker import BreakerConfig
from strato._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

__all__ = [
    "BreakerConfig",
    "Cascade",
    "CloudFirst",
    "CloudOnly",
    "EdgeFirst",
    "EdgeOnly",
    "LatencySLO",
    "Policy",
    "Retry",
]


@dataclass(frozen=True, slots=True)
class Retry:
    """Retries of one backend: `attempts` in all, sleeping U(0, min(cap, base·2^n)) between."""

    attempts: int = 2
    base_ms: float = 10.0
    cap_ms: float = 250.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_ms < 0 or self.cap_ms < self.base_ms:
            raise ConfigError("Retry needs attempts >= 1 and 0 <= base_ms <= cap_ms")


@dataclass(frozen=True, slots=True)
class Policy:
    """Base of every policy; `order` lists the tiers tried, first to last."""

    kind: ClassVar[str] = "failover"
    order: ClassVar[tuple[str, ...]] = ("edge", "cloud")


@dataclass(frozen=True, slots=True)
class EdgeFirst(Policy):
    """The edge answers; the cloud only when the edge cannot (`TransportError`), never on bad input."""

    order: ClassVar[tuple[str, ...]] = ("edge", "cloud")


@dataclass(frozen=True, slots=True)
class CloudFirst(Policy):
    """The cloud answers; the edge only when the cloud cannot."""

    order: ClassVar[tuple[str, ...]] = ("cloud", "edge")


@dataclass(frozen=True, slots=True)
class EdgeOnly(Policy):
    """Only the edge; nothing leaves the device."""

    order: ClassVar[tuple[str, ...]] = ("edge",)


@dataclass(frozen=True, slots=True)
class CloudOnly(Policy):
    """Only the cloud."""

    order: ClassVar[tuple[str, ...]] = ("cloud",)


@dataclass(frozen=True, slots=True)
class Cascade(Policy):
    """The edge answers; rows whose confidence is under `threshold` go to the cloud.

    For a classifier (manifest `task: classification`) a row's confidence is its calibrated top
    probability: `temperature` and `threshold` default to the manifest's calibration
    (`temperature`, `cascade_threshold`), and an uncalibrated classifier without a `threshold`
    argument is a `ConfigError` that says how to calibrate. `output` names the logits output
    (default: the first); a one-column or unknown output is a `ConfigError` at the first call.

    Any other task (detection, regression, ...) needs `confidence`: a function of the edge's
    outputs (name -> array) returning one confidence per row; its `threshold` defaults to
    `default_threshold` (0.5). `route_reason` says where the threshold came from: `argument`,
    `manifest` or `default`.
    """

    kind: ClassVar[str] = "cascade"
    default_threshold: ClassVar[float] = 0.5
    threshold: float | None = None
    temperature: float | None = None
    output: str | None = None
    confidence: Callable[[dict[str, np.ndarray[Any, Any]]], Any] | None = None

    def __post_init__(self) -> None:
        if self.confidence is not None and not callable(self.confidence):
            raise ConfigError("Cascade confidence= takes a function of the outputs")
        threshold = self.threshold
        if threshold is not None and self.confidence is None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"Cascade threshold must be in [0, 1], got {threshold}")
        if threshold is not None and not math.isfinite(threshold):
            raise ConfigError(f"Cascade threshold must be a finite number, got {threshold}")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"Cascade temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True, slots=True)
class LatencySLO(Policy):
    """Answer within `deadline_ms`: when the edge has not answered after `hedge_after_ms` (default:
    the edge's p95, learned online), send the same request to the cloud; first answer wins and
    the other is cancelled (abandoned, for the sync client).
    """

    kind: ClassVar[str] = "hedge"
    deadline_ms: float = 1000.0
    hedge_after_ms: float | None = None

    def __post_init__(self) -> None:
        if self.deadline_ms <= 0:
            raise ConfigError(f"LatencySLO deadline_ms must be > 0, got {self.deadline_ms}")
        if self.hedge_after_ms is not None and not 0 <= self.hedge_after_ms <= self.deadline_ms:
            raise ConfigError("LatencySLO hedge_after_ms must be within [0, deadline_ms]")
