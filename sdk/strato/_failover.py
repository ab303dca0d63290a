"""The failover half of the routing core, sans-IO: one backend with payload chunks and retries
(`call`, `attempt`), backends in turn with breakers and a last resort (`failover`), the version
gate, and the words route reasons use. `strato._routing.Router` builds the policies on it."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from strato._errors import Throttled, Timeout, TransportError, Unavailable, VersionMismatch
from strato._inference import InferRequest, InferResponse
from strato._payload import merge_answers, split_rows
from strato._route_steps import Backend, Call, ModelInfo, Sleep, Steps

if TYPE_CHECKING:
    from strato.policies import Retry

__all__ = ["Failover", "Outcome", "Tried", "all_failed", "backoff", "failure_kind"]

# (answer, route reason, attempts, tier that answered)
Outcome = tuple[InferResponse, str, int, str]
# One backend tried: (answer, None, tries) or (None, why it failed, tries)
Tried = tuple[InferResponse | None, TransportError | None, int]
perf_counter = time.perf_counter


def failure_kind(error: TransportError) -> str:
    """The word a route reason uses for a failure."""
    if isinstance(error, Timeout):
        return "timeout"
    if isinstance(error, Throttled):
        return "throttled"
    if isinstance(error, VersionMismatch):
        return "version"
    return "unavailable"


def backoff(retry: Retry, tries: int) -> float:
    """Full jitter: U(0, min(cap, base·2^(tries-1))) seconds."""
    return random.uniform(0.0, min(retry.cap_ms, retry.base_ms * 2 ** (tries - 1)) / 1e3)


def all_failed(failures: list[TransportError]) -> TransportError:
    """One error for a call no tier answered: the only failure, or the last one's kind with a
    message listing each tier's failure (and `failures` holding them)."""
    if not failures:
        return Unavailable("no backend to try", backend=None)
    if len(failures) == 1:
        return failures[0]
    last = failures[-1]
    listed = "; ".join(f"{e.backend or '?'}: {e}" for e in failures)
    error = type(last)(f"every tier failed: {listed}", backend=None, failures=tuple(failures))
    error.__cause__ = last
    return error


class Failover:
    """Backends, retries and the version gate: what every policy is carried out with."""

    backends: list[Backend]
    retry: Retry
    require_same_version: bool

    def mismatch(
        self, backend: Backend, response: InferResponse, request: InferRequest, info: ModelInfo
    ) -> VersionMismatch | None:
        """Records the version the edge serves; checks other tiers' answers against it."""
        if backend.tier == "edge":
            if response.model_version:
                info.version = response.model_version
            return None
        wanted = request.version or info.version
        if self.require_same_version and wanted and response.model_version != wanted:
            return VersionMismatch(
                f"{backend.name} answered with {response.model_name}:{response.model_version} "
                f"but the edge serves version {wanted} (require_same_version=True)",
                backend=backend.name,
            )
        return None

    # --- one backend: payload chunks and retries ----------------------------------------
    def call(
        self,
        backend: Backend,
        request: InferRequest,
        deadline: float,
        info: ModelInfo,
        failed: TransportError | None = None,
    ) -> Steps[Tried]:
        """`request` to one backend, in as many chunks as its payload limit needs.

        `failed`: the first try already failed with this error (the hot path's), so go on
        from the retry. Errors that are not the backend's health (`InferenceError`,
        `ConfigError`) propagate and never count against its breaker.
        """
        parts = None
        if backend.limited and failed is None:
            transport = backend.transport
            budget = transport.max_tensor_bytes(len(request.inputs))
            parts = split_rows(request, budget, limit=transport.payload_limit, backend=backend.name)
        if parts is None:
            return (yield from self.attempt(backend, request, deadline, info, failed))
        answers: list[InferResponse] = []
        tries = 0
        for part in parts:
            response, error, more = yield from self.attempt(backend, part, deadline, info)
            tries += more
            if response is None:
                return None, error, tries
            answers.append(response)
        try:
            return merge_answers(answers), None, tries
        except VersionMismatch as exc:
            return None, exc, tries

    def attempt(
        self,
        backend: Backend,
        request: InferRequest,
        deadline: float,
        info: ModelInfo,
        failed: TransportError | None = None,
    ) -> Steps[Tried]:
        """One request to one backend with retries (jittered backoff, within the deadline)."""
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
                yield Sleep(delay)
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
                response = yield Call(backend, request, remaining)
            except TransportError as exc:
                if isinstance(exc, VersionMismatch):
                    breaker.release()
                    return None, exc, tries
                breaker.failure()
                failed = exc
                continue
            except BaseException:  # bad input, setup mistake, cancelled: no verdict on health
                breaker.release()
                raise
            breaker.success()
            backend.latency.record(perf_counter() - start)
            return response, self.mismatch(backend, response, request, info), tries

    # --- policies ------------------------------------------------------------------------
    def failover(
        self,
        backends: list[Backend],
        request: InferRequest,
        deadline: float,
        info: ModelInfo,
        *,
        failed: TransportError | None = None,
        earlier: tuple[list[str], list[TransportError], int] | None = None,
    ) -> Steps[Outcome]:
        """Each backend in turn (skipping open breakers) until one answers; then, as a last
        resort, the skipped ones. `failed`: the first backend's first try failed already;
        `earlier`: (reasons, failures, attempts) of backends tried before these."""
        reasons, failures, attempts = earlier or ([], [], 0)
        skipped: list[Backend] = []
        for index, backend in enumerate(backends):
            first_error = failed if index == 0 else None
            if first_error is None and not backend.breaker.allow():
                skipped.append(backend)
                reasons.append(f"{backend.tier}-open")
                continue
            response, error, tries = yield from self.call(
                backend, request, deadline, info, first_error
            )
            attempts += tries
            if error is None and response is not None:
                return response, "→".join([*reasons, backend.tier]), attempts, backend.answer_tier
            assert error is not None
            failures.append(error)
            reasons.append(f"{backend.tier}-{failure_kind(error)}")
        for backend in skipped:  # every usable breaker is open: try them anyway, last resort
            response, error, tries = yield from self.call(backend, request, deadline, info)
            attempts += tries
            if error is None and response is not None:
                reason = "→".join([*reasons, f"{backend.tier}(open)"])
                return response, reason, attempts, backend.answer_tier
            assert error is not None
            failures.append(error)
        raise all_failed(failures)
