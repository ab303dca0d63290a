"""The routing core, sans-IO: every policy written once, as generators of commands.

`Router.predict` yields `Call`/`Metadata`/`Sleep`/`Start`/`Wait`/`Cancel` commands
(`strato._route_steps`) and consumes their outcomes; `Client` and `AsyncClient` drive it with
blocking calls or awaits. Breakers, retries (full-jitter backoff, retryable errors only, within
the deadline), payload chunks, cascade rows, hedges and route reasons live here and nowhere else.

Reasons read like `edge`, `edge-unavailable→cloud`, `edge-open→cloud` (breaker open),
`cascade p=0.62<0.80 (manifest)→cloud`, `hedge after 12ms: cloud won`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._cascade import (
    CascadeSettings,
    cascade_reason,
    cascade_settings,
    confidence_rows,
    merge_rows,
    rows_of,
)
from strato._errors import (
    ConfigError,
    InvalidInput,
    StratoError,
    TransportError,
)
from strato._failover import Failover, Outcome, all_failed, failure_kind
from strato._hedging import hedge
from strato._inference import InferRequest, InferResponse, Prediction
from strato._route_steps import (
    Backend,
    Hop,
    Metadata,
    ModelInfo,
    Steps,
)
from strato.policies import Cascade, EdgeFirst, LatencySLO, Policy, Retry

if TYPE_CHECKING:
    from collections.abc import Collection

    from strato._breaker import BreakerConfig

__all__ = ["Router", "named"]

perf_counter = time.perf_counter


def _check_transport(slot: str, transport: Any, tier: str) -> None:
    """Setup mistakes fail here, before any call: never later as an outage."""
    if not hasattr(transport, "infer") or not hasattr(transport, "tier"):
        raise ConfigError(
            f"{slot}= takes a transport (e.g. Edge('http://127.0.0.1:8000'), Lambda('fn')), "
            f"got {type(transport).__name__} {transport!r}"
        )
    if transport.tier != tier:
        raise ConfigError(
            f"{slot}= takes an {tier}-tier transport, got {transport!r} (tier {transport.tier})"
        )
    url = getattr(transport, "url", None)
    if isinstance(url, str) and "://" not in url:
        raise ConfigError(
            f"{transport!r}: the URL {url!r} has no scheme; write http://{url} (or https://)"
        )


class Router(Failover):
    """Carries out policies over the client's backends; shared by `Client` and `AsyncClient`.

    Thread-safe and task-safe: per-call state lives in the generators, the shared state
    (breakers, latency trackers, model info, plans) tolerates concurrent use.
    """

    def __init__(
        self,
        edge: Any,
        cloud: Any,
        *,
        policy: Policy | None,
        timeout: float,
        retry: Retry | None,
        breaker: BreakerConfig,
        require_same_version: bool,
        cloud_never: bool | Collection[str],
    ) -> None:
        if edge is None and cloud is None:
            raise ConfigError("Client needs an edge or a cloud transport (or both)")
        if edge is not None:
            _check_transport("edge", edge, "edge")
        if cloud is not None:
            _check_transport("cloud", cloud, "cloud")
        self.backends = [Backend(t, breaker) for t in (edge, cloud) if t is not None]
        self.policy = policy or EdgeFirst()
        self.timeout = timeout
        self.retry = retry or Retry()
        self.require_same_version = require_same_version
        self.cloud_never = cloud_never
        self.models: dict[str, ModelInfo] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self._plans: dict[tuple[Policy, bool], list[Backend]] = {}
        self._last: tuple[Policy | None, bool, list[Backend]] = (None, True, [])
        self._cascades: dict[tuple[Policy, str], CascadeSettings] = {}

    # --- model metadata ------------------------------------------------------------------
    def info(self, model: str, policy: Policy | None = None) -> Steps[ModelInfo]:
        """The model's info, asking the policy's tiers (edge first) for metadata once."""
        known = self.models.get(model)
        if known is not None:
            return known
        policy = policy or self.policy
        tiers = policy.order
        failures: list[StratoError] = []
        for backend in sorted(self.backends, key=lambda b: b.tier != "edge"):
            if backend.tier not in tiers:
                continue  # EdgeOnly never asks the cloud, not even for metadata
            try:
                metadata = yield Metadata(backend, model)
            except ConfigError:
                raise  # a setup mistake: never hidden behind another tier
            except StratoError as exc:  # down, or ModelNotFound: another tier may answer
                failures.append(exc)
                continue
            never = self.cloud_never
            private = never if isinstance(never, bool) else model in never
            info = ModelInfo.from_metadata(
                metadata, from_edge=backend.tier == "edge", private=private
            )
            self.metadata[model] = metadata
            self.models[model] = info
            return info
        if not failures:
            raise ConfigError(f"policy {type(policy).__name__} uses no tier this client has")
        transport_failures = [e for e in failures if isinstance(e, TransportError)]
        if len(transport_failures) == len(failures):
            raise all_failed(transport_failures)
        raise next(e for e in failures if not isinstance(e, TransportError))

    # --- one call ------------------------------------------------------------------------
    def direct(
        self,
        model: str,
        x: Any,
        version: str | None,
        timeout: float | None,
        policy: Policy | None,
        request_id: str | None,
    ) -> Hop | None:
        """The hot path: a `Hop` when one call to a healthy first backend is the whole plan
        (known model, failover policy, a request within its payload limit); None sends the
        driver to `predict`."""
        info = self.models.get(model)
        policy = policy or self.policy
        if info is None or policy.kind != "failover":
            return None
        last = self._last  # the plan cache's last entry, inline (see `plan`)
        if last[0] is policy and last[1] == info.cloud_allowed:
            plan = last[2]
        else:
            plan = self.plan(policy, info, model)
        first = plan[0]
        if first.breaker.state != "closed":
            return None
        start = perf_counter()
        single = info.single_input
        inputs = {single: x} if single and type(x) is np.ndarray else named(model, x, info)
        if first.limited:  # one request only if it fits; else `predict` splits the rows
            size = 0
            for array in inputs.values():
                size += array.nbytes
            if size > first.transport.max_tensor_bytes(len(inputs)):
                return None
        request = InferRequest(model, inputs, version, request_id)
        return first, request, start, start + (timeout or self.timeout), info, plan

    def answered(self, hop: Hop, response: InferResponse) -> Prediction | None:
        """The hop's answer as a `Prediction`; None when it must go on (`resume`)."""
        backend, request, start, _, info, _ = hop
        backend.breaker.success()
        elapsed = perf_counter() - start
        backend.latency.record(elapsed)
        if backend.tier == "edge":  # inline `mismatch` for the edge: the hot path's common case
            if response.model_version:
                info.version = response.model_version
        elif self.mismatch(backend, response, request, info) is not None:
            return None
        return Prediction(
            response.outputs,
            response.served_by,
            response.model_name,
            response.model_version,
            elapsed * 1e3,
            response.precision,
            backend.tier,
            1,
            backend.answer_tier,
        )

    def resume(
        self, hop: Hop, failed: BaseException | None, response: InferResponse | None = None
    ) -> Steps[Prediction]:
        """Go on after a hop that failed with `failed`, or whose `response` came from another
        version than require_same_version allows."""
        if failed is not None and not isinstance(failed, TransportError):
            raise failed  # bad input, a setup mistake: never retried, never re-routed
        backend, request, start, deadline, info, plan = hop
        if failed is not None:
            backend.breaker.failure()
            outcome = yield from self.failover(plan, request, deadline, info, failed=failed)
        else:
            assert response is not None
            mismatch = self.mismatch(backend, response, request, info)
            assert mismatch is not None
            earlier: tuple[list[str], list[TransportError], int] = (
                [f"{backend.tier}-version"],
                [mismatch],
                1,
            )
            outcome = yield from self.failover(plan[1:], request, deadline, info, earlier=earlier)
        return self.prediction(outcome, start)

    def predict(
        self,
        model: str,
        x: Any,
        version: str | None,
        timeout: float | None,
        policy: Policy | None,
        request_id: str | None,
    ) -> Steps[Prediction]:
        """One `Prediction` for `x` (an ndarray for single-input models, else name → ndarray)."""
        start = perf_counter()
        info = self.models.get(model)
        if info is None:
            info = yield from self.info(model, policy)
        single = info.single_input
        inputs = {single: x} if single and type(x) is np.ndarray else named(model, x, info)
        request = InferRequest(model, inputs, version, request_id)
        deadline = start + (timeout or self.timeout)
        outcome = yield from self.route(policy or self.policy, request, deadline, info)
        return self.prediction(outcome, start)

    @staticmethod
    def prediction(outcome: Outcome, start: float) -> Prediction:
        """The caller's `Prediction` of a routed answer."""
        response, reason, attempts, tier = outcome
        return Prediction(
            response.outputs,
            response.served_by,
            response.model_name,
            response.model_version,
            (perf_counter() - start) * 1e3,
            response.precision,
            reason,
            attempts,
            tier,
        )

    def route(
        self, policy: Policy, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Steps[Outcome]:
        """Carry out `policy` for one request."""
        kind = policy.kind
        if kind == "cascade" and isinstance(policy, Cascade):
            return (yield from self.cascade(policy, request, deadline, info))
        if kind == "hedge" and isinstance(policy, LatencySLO):
            return (yield from self.hedge(policy, request, deadline, info))
        if kind != "failover":
            raise ConfigError(f"unknown policy {policy!r} (kind {kind!r})")
        plan = self.plan(policy, info, request.model)
        return (yield from self.failover(plan, request, deadline, info))

    def plan(self, policy: Policy, info: ModelInfo, model: str) -> list[Backend]:
        """The backends `policy` tries, in order (cached per policy)."""
        last = self._last  # one tuple, read at once: safe across threads
        if last[0] is policy and last[1] == info.cloud_allowed:
            return last[2]
        key = (policy, info.cloud_allowed)
        plan = self._plans.get(key)
        if plan is None:
            plan = [b for tier in policy.order for b in self.backends if b.tier == tier]
            if not info.cloud_allowed:
                plan = [b for b in plan if b.tier != "cloud"]
            if not plan:
                raise ConfigError(
                    f"{model} is marked cloud: never and policy {type(policy).__name__} "
                    "has no edge tier to use"
                    if not info.cloud_allowed
                    else f"policy {type(policy).__name__} uses no tier this client has"
                )
            self._plans[key] = plan
        self._last = (policy, info.cloud_allowed, plan)
        return plan

    def cascade_for(self, policy: Cascade, model: str, info: ModelInfo) -> CascadeSettings:
        """`policy`'s settings for `model`, checked at its first call, then cached."""
        key = (policy, model)
        settings = self._cascades.get(key)
        if settings is None:
            settings = self._cascades[key] = cascade_settings(
                policy,
                model,
                task=info.task,
                outputs=info.outputs,
                threshold=info.threshold,
                temperature=info.temperature,
                threshold_status=info.threshold_status,
            )
        return settings

    def cascade(
        self, policy: Cascade, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Steps[Outcome]:
        """The edge answers; rows under the confidence threshold go to the cloud."""
        settings = self.cascade_for(policy, request.model, info)
        edges = [b for b in self.backends if b.tier == "edge"]
        clouds = [b for b in self.backends if b.tier == "cloud"] if info.cloud_allowed else []
        if not edges:
            return (yield from self.failover(clouds, request, deadline, info))
        response, reason, attempts, tier = yield from self.failover(
            edges + clouds, request, deadline, info
        )
        if response.served_by not in {b.name for b in edges}:
            return response, reason, attempts, tier
        confidence, rows = confidence_rows(response, settings)
        reason = cascade_reason(confidence, rows, settings)
        if not len(rows):
            return response, reason, attempts, tier
        if not clouds:
            note = "cloud: never" if not info.cloud_allowed else "no cloud tier"
            return response, f"{reason}, {note}: edge answer kept", attempts, tier
        escalated = rows_of(request, rows) if len(rows) < len(confidence) else request
        try:
            cloud, cloud_reason, tries, cloud_tier = yield from self.failover(
                clouds, escalated, deadline, info
            )
        except TransportError as exc:
            kept = f"{reason}, cloud-{failure_kind(exc)}: edge answer kept"
            return response, kept, attempts + 1, tier
        attempts += tries
        if escalated is request:
            return cloud, f"{reason}→{cloud_reason}", attempts, cloud_tier
        merged = merge_rows(response, cloud, rows)
        return merged, f"{reason}→{cloud_reason}", attempts, f"{tier}+{cloud_tier}"

    def hedge(
        self, policy: LatencySLO, request: InferRequest, deadline: float, info: ModelInfo
    ) -> Steps[Outcome]:
        """The `LatencySLO` policy (`strato._hedging`)."""
        return (yield from hedge(self, policy, request, deadline, info))


def named(model: str, x: Any, info: ModelInfo) -> dict[str, np.ndarray[Any, Any]]:
    """`x` as name → array: an ndarray goes to a single-input model's one input."""
    if isinstance(x, np.ndarray):
        names = info.input_names
        if len(names) != 1:
            raise InvalidInput(f"{model} takes {len(names)} inputs {names}; pass a dict")
        return {names[0]: x}
    if not isinstance(x, Mapping):
        raise InvalidInput(f"inputs must be an ndarray or a dict of them, got {type(x).__name__}")
    for name, array in x.items():
        if not isinstance(array, np.ndarray):
            raise InvalidInput(f"input {name!r} must be an ndarray, got {type(array).__name__}")
    return x if type(x) is dict else dict(x)
