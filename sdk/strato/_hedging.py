"""Hedging (the `LatencySLO` policy) in the sans-IO core: the edge first; past `hedge_after`,
the cloud too, if its breaker allows; the first answer wins and the other leg is cancelled.
Legs are `Start`ed generators the driver runs concurrently (threads, or tasks)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from strato._errors import Timeout, TransportError, Unavailable
from strato._failover import Failover, Outcome, Tried, all_failed, failure_kind
from strato._route_steps import Backend, Cancel, Finished, ModelInfo, Start, Steps, Wait

if TYPE_CHECKING:
    from strato._inference import InferRequest
    from strato.policies import LatencySLO

__all__ = ["first_answer", "hedge", "hedge_delay", "leg_result"]

perf_counter = time.perf_counter


def hedge_delay(policy: LatencySLO, edge: Backend, deadline: float) -> float:
    """Seconds to wait for the edge before hedging: explicit, else its p95, else half the budget."""
    if policy.hedge_after_ms is not None:
        return policy.hedge_after_ms / 1e3
    p95 = edge.latency.p95()
    budget = max(0.0, deadline - perf_counter())
    if p95 is None:
        return budget / 2
    return min(p95, budget)


def hedge(
    core: Failover, policy: LatencySLO, request: InferRequest, deadline: float, info: ModelInfo
) -> Steps[Outcome]:
    """The edge first; past `hedge_after`, the cloud too (if its breaker allows); first
    answer wins, the other leg is cancelled."""
    deadline = min(deadline, perf_counter() + policy.deadline_ms / 1e3)
    edge = next((b for b in core.backends if b.tier == "edge"), None)
    cloud = next((b for b in core.backends if b.tier == "cloud"), None)
    if not info.cloud_allowed:
        cloud = None
    if edge is None or cloud is None or not edge.breaker.allow():
        backends = [b for b in (edge, cloud) if b is not None]
        return (yield from core.failover(backends, request, deadline, info))
    hedge_after = hedge_delay(policy, edge, deadline)
    edge_leg = yield Start(core.call(edge, request, deadline, info))
    done: list[Finished] = yield Wait([edge_leg], hedge_after)
    if done:
        response, failed, tries = leg_result(done[0])
        if response is not None and failed is None:
            return response, "edge", tries, edge.answer_tier
        assert failed is not None
        earlier = ([f"edge-{failure_kind(failed)}"], [failed], tries)
        return (yield from core.failover([cloud], request, deadline, info, earlier=earlier))
    if not cloud.breaker.allow():
        done = yield Wait([edge_leg], max(0.0, deadline - perf_counter()))
        if not done:
            yield Cancel([edge_leg])
            raise Timeout("edge: no answer within the deadline (cloud-open)", backend="edge")
        response, failed, tries = leg_result(done[0])
        if failed is not None or response is None:
            raise failed or Unavailable("edge: no answer", backend="edge")
        return response, "edge (cloud-open, no hedge)", tries, edge.answer_tier
    cloud_leg = yield Start(core.call(cloud, request, deadline, info))
    return (yield from first_answer(core, edge_leg, cloud_leg, edge, cloud, hedge_after, deadline))


def first_answer(
    core: Failover,
    edge_leg: Any,
    cloud_leg: Any,
    edge: Backend,
    cloud: Backend,
    hedge_after: float,
    deadline: float,
) -> Steps[Outcome]:
    pending = [edge_leg, cloud_leg]
    failures: list[TransportError] = []
    after = f"hedge after {hedge_after * 1e3:.0f}ms"
    try:
        while pending:
            done: list[Finished] = yield Wait(pending, max(0.0, deadline - perf_counter()))
            if not done:
                break
            for finished in done:
                pending.remove(finished.handle)
                response, failed, _ = leg_result(finished)
                if failed is None and response is not None:
                    winner = edge if finished.handle is edge_leg else cloud
                    return response, f"{after}: {winner.tier} won", 2, winner.answer_tier
                assert failed is not None
                failures.append(failed)
    finally:
        if pending:
            yield Cancel(pending)
    if failures and not pending:
        raise all_failed(failures)
    raise Timeout(f"no tier answered within the deadline ({after})", backend=None)


def leg_result(finished: Finished) -> Tried:
    """A hedge leg's outcome; a leg that raised bad input or a setup error raises it here."""
    if finished.error is not None:
        raise finished.error
    result: Tried = finished.value
    return result
