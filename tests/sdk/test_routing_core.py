"""The routing core once, its two drivers alike: the same scripted scenarios (backends that answer,
fail, time out, throttle, refuse bad input or serve another version, in sequences) go through
`Client` and `AsyncClient`, and every result, reason, tier, attempt count, error and call must be
identical. The scripted transports stand in for the network only; the core and both drivers run
for real."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strato import (
    AsyncClient,
    AsyncTransport,
    BreakerConfig,
    Client,
    ConfigError,
    InferRequest,
    InferResponse,
    InvalidInput,
    Retry,
    StratoError,
    Throttled,
    Timeout,
    Transport,
    Unavailable,
    policies,
)
from strato._transports.base import NO_LIMIT

pytestmark = pytest.mark.timeout(120)

BEHAVIOURS = ("ok", "ok", "unavailable", "timeout", "throttled", "bad", "version")
ROW = 4  # features per row: float32, 16 bytes a row


def metadata(version: str) -> dict[str, Any]:
    return {
        "name": "m",
        "versions": [version],
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, ROW]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, ROW]}],
        "parameters": {"task": "classification", "version": version, "calibration": {}},
    }


@dataclass
class Script:
    """What one backend does on each call, in order (then `ok`), and what it was asked."""

    name: str
    tier: str
    behaviours: list[str]
    scale: float
    version: str = "2"
    budget: int | None = None  # tensor bytes per request (None: unlimited)
    delay_s: float = 0.0
    calls: list[tuple[str, int]] = field(default_factory=list)

    def answer(self, request: InferRequest) -> InferResponse:
        x = request.inputs["x"]
        behaviour = self.behaviours.pop(0) if self.behaviours else "ok"
        self.calls.append((behaviour, len(x)))
        if behaviour == "unavailable":
            raise Unavailable(f"{self.name} down", backend=self.name)
        if behaviour == "timeout":
            raise Timeout(f"{self.name} slow", backend=self.name)
        if behaviour == "throttled":
            raise Throttled(f"{self.name} throttled", backend=self.name)
        if behaviour == "bad":
            raise InvalidInput(f"{self.name} refused the input")
        version = "1" if behaviour == "version" else self.version
        return InferResponse(
            {"logits": x * self.scale}, "m", version, request.id, self.name, "fp32"
        )


class SyncScripted(Transport):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.name, self.tier = script.name, script.tier
        self.payload_limit = NO_LIMIT if script.budget is None else script.budget + 10_000

    def max_tensor_bytes(self, inputs: int) -> int:
        return NO_LIMIT if self.script.budget is None else self.script.budget

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        if self.script.delay_s:
            time.sleep(self.script.delay_s)
        return self.script.answer(request)

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        return metadata(self.script.version)


class AsyncScripted(AsyncTransport):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.name, self.tier = script.name, script.tier
        self.payload_limit = NO_LIMIT if script.budget is None else script.budget + 10_000

    def max_tensor_bytes(self, inputs: int) -> int:
        return NO_LIMIT if self.script.budget is None else self.script.budget

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        if self.script.delay_s:
            await asyncio.sleep(self.script.delay_s)
        return self.script.answer(request)

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        return metadata(self.script.version)


POLICIES = {
    "edge-first": policies.EdgeFirst(),
    "cloud-first": policies.CloudFirst(),
    "edge-only": policies.EdgeOnly(),
    "cloud-only": policies.CloudOnly(),
    "cascade": policies.Cascade(threshold=0.5),
}


@dataclass(frozen=True)
class Scenario:
    edge: tuple[str, ...] | None
    cloud: tuple[str, ...] | None
    policy: str
    attempts: int
    failures: int
    same_version: bool
    cloud_budget_rows: int | None
    batches: tuple[np.ndarray, ...]
    edge_budget_rows: int | None = None

    def scripts(self) -> tuple[Script | None, Script | None]:
        edge = None
        if self.edge is not None:
            budget = None if self.edge_budget_rows is None else self.edge_budget_rows * ROW * 4
            edge = Script("edge", "edge", list(self.edge), 1.0, budget=budget)
        cloud = None
        if self.cloud is not None:
            budget = None if self.cloud_budget_rows is None else self.cloud_budget_rows * ROW * 4
            cloud = Script("lambda", "cloud", list(self.cloud), 3.0, budget=budget)
        return edge, cloud

    def options(self) -> dict[str, Any]:
        return {
            "policy": POLICIES[self.policy],
            "retry": Retry(attempts=self.attempts, base_ms=0, cap_ms=0),
            "breaker": BreakerConfig(
                failures=self.failures, window_s=60, cooldown_s=60, max_cooldown_s=60
            ),
            "require_same_version": self.same_version,
        }


def outcome(call: Any) -> tuple[Any, ...]:
    """What a predict did, comparable across drivers (errors by type and message)."""
    try:
        pred = call()
    except StratoError as exc:
        failures = [type(e).__name__ for e in getattr(exc, "failures", ())]
        return ("error", type(exc).__name__, str(exc), tuple(failures))
    return (
        "ok",
        pred.output.tobytes(),
        pred.served_by,
        pred.tier,
        pred.model_version,
        pred.route_reason,
        pred.attempts,
    )


def run_sync(scenario: Scenario) -> tuple[list[Any], Any]:
    edge, cloud = scenario.scripts()
    client = Client(
        edge=SyncScripted(edge) if edge else None,
        cloud=SyncScripted(cloud) if cloud else None,
        **scenario.options(),
    )
    results = [outcome(lambda b=b: client.predict("m", b)) for b in scenario.batches]
    client.close()
    return results, (edge and edge.calls, cloud and cloud.calls)


def run_async(scenario: Scenario) -> tuple[list[Any], Any]:
    edge, cloud = scenario.scripts()

    async def main() -> list[Any]:
        client = AsyncClient(
            edge=AsyncScripted(edge) if edge else None,
            cloud=AsyncScripted(cloud) if cloud else None,
            **scenario.options(),
        )
        results = []
        for batch in scenario.batches:
            try:
                pred = await client.predict("m", batch)
            except StratoError as exc:
                results.append(outcome(lambda exc=exc: _raise(exc)))
            else:
                results.append(outcome(lambda pred=pred: pred))
        await client.aclose()
        return results

    return asyncio.run(main()), (edge and edge.calls, cloud and cloud.calls)


def _raise(exc: BaseException) -> Any:
    raise exc


behaviour_lists = st.lists(st.sampled_from(BEHAVIOURS), max_size=6).map(tuple)
batches = st.lists(
    st.integers(1, 5).flatmap(
        lambda rows: st.lists(
            st.floats(-3, 3, width=32), min_size=rows * ROW, max_size=rows * ROW
        ).map(lambda values: np.asarray(values, np.float32).reshape(-1, ROW))
    ),
    min_size=1,
    max_size=4,
).map(tuple)
scenarios = st.builds(
    Scenario,
    edge=st.none() | behaviour_lists,
    cloud=st.none() | behaviour_lists,
    policy=st.sampled_from(sorted(POLICIES)),
    attempts=st.integers(1, 3),
    failures=st.integers(1, 3),
    same_version=st.booleans(),
    cloud_budget_rows=st.none() | st.integers(1, 3),
    batches=batches,
    edge_budget_rows=st.none() | st.integers(1, 4),
).filter(lambda s: s.edge is not None or s.cloud is not None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_both_drivers_route_every_scenario_alike(scenario: Scenario) -> None:
    sync = run_sync(scenario)
    assert run_async(scenario) == sync


def test_a_scenario_by_hand_shows_what_the_suite_compares() -> None:
    batch = np.ones((5, ROW), np.float32)
    scenario = Scenario(("unavailable", "unavailable"), (), "edge-first", 2, 5, False, 2, (batch,))
    (result,), (edge_calls, cloud_calls) = run_sync(scenario)
    # edge fails twice (one retry), the cloud answers 5 rows in chunks of 2: 2 + 3 attempts
    assert result[2:] == ("lambda", "lambda", "cloud", "2", "edge-unavailable→cloud", 5)[1:]
    assert edge_calls == [("unavailable", 5), ("unavailable", 5)]
    assert cloud_calls == [("ok", 2), ("ok", 2), ("ok", 1)]
    assert run_async(scenario)[0] == [result]


def test_bad_input_is_never_retried_nor_rerouted_by_either_driver() -> None:
    batch = np.ones((2, ROW), np.float32)
    scenario = Scenario(("bad",), (), "edge-first", 3, 1, False, None, (batch, batch))
    sync, calls = run_sync(scenario)
    assert sync[0][:2] == ("error", "InvalidInput") and sync[1][0] == "ok"
    assert calls == ([("bad", 2), ("ok", 2)], [])  # the cloud was never asked
    assert run_async(scenario) == (sync, calls)


def test_unknown_policy_is_a_config_error_in_both_drivers() -> None:
    @dataclass(frozen=True)
    class Mystery(policies.Policy):
        kind = "mystery"

    batch = np.ones((1, ROW), np.float32)
    edge, cloud = Script("edge", "edge", [], 1.0), Script("lambda", "cloud", [], 3.0)
    client = Client(edge=SyncScripted(edge), cloud=SyncScripted(cloud), policy=Mystery())
    with pytest.raises(ConfigError, match="unknown policy"):
        client.predict("m", batch)

    async def main() -> None:
        aclient = AsyncClient(edge=AsyncScripted(edge), cloud=AsyncScripted(cloud))
        with pytest.raises(ConfigError, match="unknown policy"):
            await aclient.predict("m", batch, policy=Mystery())

    asyncio.run(main())
    assert edge.calls == cloud.calls == []


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_hedge_respects_the_cloud_breaker_in_both_drivers(driver: str) -> None:
    """The async hedge used to skip the cloud's breaker: an open cloud is never hedged to."""
    batch = np.ones((1, ROW), np.float32)
    edge = Script("edge", "edge", [], 1.0, delay_s=1.0)  # slow enough for the cloud leg to fail
    cloud = Script("lambda", "cloud", ["unavailable"], 3.0)
    slo = policies.LatencySLO(deadline_ms=2000, hedge_after_ms=20)
    options: dict[str, Any] = {
        "retry": Retry(attempts=1),
        "breaker": BreakerConfig(failures=1, window_s=60, cooldown_s=60, max_cooldown_s=60),
    }

    def sync() -> list[tuple[str, str, int]]:
        client = Client(edge=SyncScripted(edge), cloud=SyncScripted(cloud), **options)
        out = []
        for _ in range(2):
            pred = client.predict("m", batch, policy=slo)
            out.append((pred.served_by, pred.route_reason, pred.attempts))
        client.close()
        return out

    async def asynchronous() -> list[tuple[str, str, int]]:
        client = AsyncClient(edge=AsyncScripted(edge), cloud=AsyncScripted(cloud), **options)
        out = []
        for _ in range(2):
            pred = await client.predict("m", batch, policy=slo)
            out.append((pred.served_by, pred.route_reason, pred.attempts))
        return out

    answers = sync() if driver == "sync" else asyncio.run(asynchronous())
    # first call: the hedge goes to the cloud, which fails (its breaker opens); the edge wins.
    # second call: the cloud's breaker is open, so no hedge is sent at all.
    assert answers == [
        ("edge", "hedge after 20ms: edge won", 2),
        ("edge", "edge (cloud-open, no hedge)", 1),
    ]
    assert [c[0] for c in cloud.calls] == ["unavailable"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_losing_hedge_leg_stops_instead_of_retrying(driver: str) -> None:
    """The cloud wins; the slow edge leg, which would fail and retry, is stopped (async: its
    task is cancelled; sync: its thread stops at the next step) and never retries."""
    batch = np.ones((1, ROW), np.float32)
    edge = Script("edge", "edge", ["unavailable"] * 3, 1.0, delay_s=0.3)
    cloud = Script("lambda", "cloud", [], 3.0)
    slo = policies.LatencySLO(deadline_ms=5000, hedge_after_ms=20)
    retry = Retry(attempts=3, base_ms=0, cap_ms=0)
    if driver == "sync":
        client = Client(edge=SyncScripted(edge), cloud=SyncScripted(cloud), retry=retry)
        pred = client.predict("m", batch, policy=slo)
        time.sleep(1.0)  # time enough for two more edge tries, had the leg gone on
        client.close()
    else:

        async def main() -> Any:
            aclient = AsyncClient(edge=AsyncScripted(edge), cloud=AsyncScripted(cloud), retry=retry)
            answer = await aclient.predict("m", batch, policy=slo)
            await asyncio.sleep(1.0)
            return answer

        pred = asyncio.run(main())
    assert (pred.served_by, pred.route_reason) == ("lambda", "hedge after 20ms: cloud won")
    assert len(edge.calls) <= 1  # at most the call in flight when the cloud won
