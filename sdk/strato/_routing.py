"""The router: carries out a policy over the client's backends (sync; the async twin is in
`_async_client.py` and shares everything here that does no I/O).

Each call returns `(response, route_reason, attempts)`. Reasons read like `edge`,
`edge-unavailable→cloud`, `edge-open→cloud` (breaker open), `cascade p=0.62<0.80`,
`hedge after 12ms: cloud won`.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strato._breaker import Breaker, BreakerConfig, LatencyTracker
from strato._cascade import cascade_reason, confidence_rows, merge_rows, rows_of
from strato._errors import (
    ConfigError,
    InferenceError,
    Throttled,
    Timeout,
    TransportError,
    Unavailable,
)
from strato._messages import InferRequest, InferResponse
from strato.policies import Cascade, LatencySLO, Policy, Retry

if TYPE_CHECKING:
    from strato._transports.base import AsyncTransport, Transport

__all__ = ["Backend", "ModelInfo", "Router", "RouterBase", "failure_kind"]

Outcome = tuple[InferResponse, str, int]
perf_counter = time.perf_counter


class Backend:
    """One transport with its breaker and its recent latencies."""

    __slots__ = ("breaker", "latency", "name", "tier", "transport")

    def __init__(self, transport: Transport | AsyncTransport, breaker: BreakerConfig) -> None:
        self.transport: Any = transport
        self.name = transport.name
        self.tier = transport.tier
        self.breaker = Breaker(breaker)
        self.latency = LatencyTracker()

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, tier={self.tier!r}, {self.breaker!r})"


@dataclass(slots=True)
class ModelInfo:
    """What the router needs from a model's metadata, read once per model."""

    input_names: list[str]
    cloud_allowed: bool = True
    temperature: float = 1.0
    threshold: float | None = None
    edge_share: float | None = None
    labels: list[str] = field(default_factory=list)
    version: str | None = None  # the version the edge serves (for require_same_version)
    single_input: str | None = None  # the input's name when the model takes exactly one

    def __post_init__(self) -> None:
        if len(self.input_names) == 1:
            self.single_input = self.input_names[0]

    @classmethod
    def from_metadata(
        cls, metadata: dict[str, Any], *, from_edge: bool, private: bool
    ) -> ModelInfo:
        parameters = metadata.get("parameters") or {}
        calibration = parameters.get("calibration") or {}
        versions = metadata.get("versions") or []
        threshold = calibration.get("cascade_threshold")
        share = calibration.get("edge_share")
        return cls(
            input_names=[str(spec["name"]) for spec in metadata.get("inputs") or []],
            cloud_allowed=not private and parameters.get("cloud", "allowed") != "never",
            temperature=float(calibration.get("temperature") or 1.0),
            threshold=None if threshold is None else float(threshold),
            edge_share=None if share is None else float(share),
            labels=[str(label) for label in parameters.get("labels") or []],
            version=str(versions[0]) if from_edge and versions else None,
        )


def failure_kind(error: TransportError) -> str:
    if isinstance(error, Timeout):
        return "timeout"
    if isinstance(error, Throttled):
        return "throttled"
    return "unavailable"


def backoff(retry: Retry, tries: int) -> float:
    """Full jitter: U(0, min(cap, base·2^(tries-1))) seconds."""
    return random.uniform(0.0, min(retry.cap_ms, retry.base_ms * 2 ** (tries - 1)) / 1e3)


def version_error(backend: Backend, response: InferResponse, wanted: str) -> Unavailable:
    return Unavailable(
        f"{backend.name} answered with {response.model_name}:{response.model_version} but the edge "
        f"serves version {wanted} (require_same_version=True)",
        backend=backend.name,
    )


class RouterBase:
    """What the sync and async routers share: backends, settings, plans, the version check."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        retry: Retry,
        require_same_version: bool,
    ) -> None:
        self.backends = backends
        self.retry = retry
        self.require_same_version = require_same_version
        self._plans: dict[tuple[int, bool], list[Backend]] = {}
        self._last: tuple[Policy | None, bool, list[Backend]] = (None, True, [])
        self._policies: list[Policy] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- which backends ------------------------------------------------------------------
    def candidates(self, policy: Policy, info: ModelInfo, model: str) -> list[Backend]:
        chosen = [b for tier in policy.order for b in self.backends if b.tier == tier]
        if not info.cloud_allowed:
            chosen = [b for b in chosen if b.tier != "cloud"]
            if not chosen:
                raise ConfigError(
                    f"{model} is marked cloud: never and policy {type(policy).__name__} "
                    "has no edge tier to use"
                )
        return chosen

    def plan(self, policy: Policy, info: ModelInfo, model: str) -> list[Backend]:
        plan = self.candidates(policy, info, model)
        self._plans[(id(policy), info.cloud_allowed)] = plan
        self._policies.append(policy)  # keeps id(policy) from being reused while cached
        return plan

    def checked(
        self, backend: Backend, response: InferResponse, request: InferRequest, info: ModelInfo
    ) -> InferResponse:
        if backend.tier == "edge":
            info.version = response.model_version or info.version
            return response
        wanted = request.version or info.version
        if self.require_same_version and wanted and response.model_version != wanted:
            raise version_error(backend, response, wanted)
        return response


class Router(RouterBase):
    """Carries out policies for `Client` over its backends (thread-safe)."""

    # --- one backend, with retries ------------------------------------------------------
    def call(
        self,
        backend: Backend,
        request: InferRequest,
        deadline: float,
        info: ModelInfo,
        failed: TransportError | None = None,
    ) -> tuple[InferResponse | None, TransportError | None, int]:
        """(response, None, tries) or (None, error, tries); `InferenceError` propagates.

        `failed`: the first try already failed with this error (the hot path's), so go on
        from the retry.
        """
        tries = 0 if failed is None else 1
        breaker = backend.breaker
        while True:
            if failed is not None:
                if tries >= self.retry.attempts or not breaker.allow():
                    return None, failed, tries
                delay = backoff(self.retry, tries)
                if perf_counter() + delay >= deadline:
                    breaker.release()
                    return None, failed, tries
                time.sleep(delay)
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
                response = backend.transport.infer(request, timeout=remaining)
            except TransportError as exc:
                breaker.failure()
                failed = exc
                continue
            except InferenceError:
                breaker.release()
                raise
            breaker.success()
            backend.latency.record(perf_counter() - start)
            return self.checked(backend, response, request, info), None, tries

    # --- policies ------------------------------------------------------------------------
    def route(
        self, policy: Policy, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        if policy.kind != "failover":
            if isinstance(policy, Cascade):
                return self.cascade(policy, request, deadline, info)
            if isinstance(policy, LatencySLO):
                return self.hedge(policy, request, deadline, info)
            raise ConfigError(f"unknown policy {policy!r}")
        last = self._last  # one tuple, read at once: safe across threads
        if last[0] is policy and last[1] == info.cloud_allowed:
            plan = last[2]
        else:
            plan = self._plans.get((id(policy), info.cloud_allowed)) or self.plan(
                policy, info, request.model
            )
            self._last = (policy, info.cloud_allowed, plan)
        first = plan[0]
        if first.breaker.state != "closed":
            return self.failover(plan, request, deadline, info)
        # Hot path: the first backend is healthy; one call, O(1) bookkeeping, no lists.
        start = perf_counter()
        try:
            response = first.transport.infer(request, timeout=deadline - start)
        except TransportError as exc:
            first.breaker.failure()
            return self.failover(plan, request, deadline, info, failed=exc)
        first.breaker.success()
        first.latency.record(perf_counter() - start)
        if first.tier == "edge":
            info.version = response.model_version or info.version
            return response, first.tier, 1
        try:
            return self.checked(first, response, request, info), first.tier, 1
        except Unavailable:
            return self.failover(
                plan[1:], request, deadline, info, reasons=[f"{first.tier}-version"]
            )

    def failover(
        self,
        backends: list[Backend],
        request: InferRequest,
        deadline: float,
        info: ModelInfo,
        *,
        failed: TransportError | None = None,
        reasons: list[str] | None = None,
    ) -> Outcome:
        """Each backend in turn (skipping open breakers) until one answers.

        `failed`: the first backend's first try failed already with this error.
        """
        reasons = reasons or []
        attempts = 0
        error: TransportError | None = None
        skipped: list[Backend] = []
        for index, backend in enumerate(backends):
            first_error = failed if index == 0 else None
            if first_error is None and not backend.breaker.allow():
                skipped.append(backend)
                reasons.append(f"{backend.tier}-open")
                continue
            try:
                response, error_now, tries = self.call(
                    backend, request, deadline, info, first_error
                )
            except Unavailable as exc:  # another model version: not the backend's health
                reasons.append(f"{backend.tier}-version")
                attempts += 1
                error = exc
                continue
            attempts += tries
            if response is not None:
                return response, "→".join([*reasons, backend.tier]), attempts
            assert error_now is not None
            error = error_now
            reasons.append(f"{backend.tier}-{failure_kind(error_now)}")
        for backend in skipped:  # every usable breaker is open: try them anyway, last resort
            response, error_now, tries = self.call(backend, request, deadline, info)
            attempts += tries
            if response is not None:
                return response, "→".join([*reasons, f"{backend.tier}(open)"]), attempts
            error = error_now
        if error is None:
            error = Unavailable("no backend to try", backend=None)
        raise error

    def cascade(
        self, policy: Cascade, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        edges = [b for b in self.backends if b.tier == "edge"]
        clouds = [b for b in self.backends if b.tier == "cloud"] if info.cloud_allowed else []
        if not edges:
            return self.failover(clouds, request, deadline, info)
        response, reason, attempts = self.failover(edges + clouds, request, deadline, info)
        if response.served_by not in {b.name for b in edges}:
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
            cloud, cloud_reason, tries = self.failover(clouds, escalated, deadline, info)
        except TransportError as exc:
            return response, f"{reason}, cloud-{failure_kind(exc)}: edge answer kept", attempts + 1
        attempts += tries
        if escalated is request:
            return cloud, f"{reason}→{cloud_reason}", attempts
        return merge_rows(response, cloud, rows), f"{reason}→{cloud_reason}", attempts

    def hedge(
        self, policy: LatencySLO, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Outcome:
        deadline = min(deadline, perf_counter() + policy.deadline_ms / 1e3)
        edge = next((b for b in self.backends if b.tier == "edge"), None)
        cloud = next((b for b in self.backends if b.tier == "cloud"), None)
        if not info.cloud_allowed:
            cloud = None
        if edge is None or cloud is None or not edge.breaker.allow():
            backends = [b for b in (edge, cloud) if b is not None]
            return self.failover(backends, request, deadline, info)
        hedge_after = hedge_delay(policy, edge, deadline)
        pool = self.pool()
        edge_future = pool.submit(self.call, edge, request, deadline, info)
        done, _ = wait([edge_future], timeout=hedge_after)
        if done:
            response, failed, tries = edge_future.result()
            if response is not None:
                return response, "edge", tries
            assert failed is not None
            cloud_response, reason, more = self.failover([cloud], request, deadline, info)
            return cloud_response, f"edge-{failure_kind(failed)}→{reason}", tries + more
        if not cloud.breaker.allow():
            response, failed, tries = edge_future.result()
            if response is None:
                assert failed is not None
                raise failed
            return response, "edge (cloud-open, no hedge)", tries
        cloud_future = pool.submit(self.call, cloud, request, deadline, info)
        return self.first_answer(edge_future, cloud_future, hedge_after, deadline)

    def first_answer(
        self,
        edge_future: Future[tuple[InferResponse | None, TransportError | None, int]],
        cloud_future: Future[tuple[InferResponse | None, TransportError | None, int]],
        hedge_after: float,
        deadline: float,
    ) -> Outcome:
        pending = {edge_future, cloud_future}
        error: BaseException | None = None
        after = f"hedge after {hedge_after * 1e3:.0f}ms"
        while pending:
            done, pending = wait(
                pending, timeout=max(0.0, deadline - perf_counter()), return_when=FIRST_COMPLETED
            )
            if not done:
                break
            for future in done:
                try:
                    response, failed, _ = future.result()
                except TransportError as exc:  # another model version (require_same_version)
                    response, failed = None, exc
                if response is not None:
                    for loser in pending:
                        loser.cancel()  # a call already running is abandoned, its answer dropped
                    winner = "edge" if future is edge_future else "cloud"
                    return response, f"{after}: {winner} won", 2
                error = failed
        if error is not None and not pending:
            raise error
        raise Timeout(f"no tier answered within the deadline ({after})", backend=None)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=64, thread_name_prefix="strato-hedge"
                    )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def hedge_delay(policy: LatencySLO, edge: Backend, deadline: float) -> float:
    """Seconds to wait for the edge before hedging: explicit, else its p95, else half the budget."""
    if policy.hedge_after_ms is not None:
        return policy.hedge_after_ms / 1e3
    p95 = edge.latency.p95()
    budget = max(0.0, deadline - perf_counter())
    if p95 is None:
        return budget / 2
    return min(p95, budget)
