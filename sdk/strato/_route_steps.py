"""What the sans-IO routing core and its drivers exchange (the way h11 speaks in events).

The core (`strato._routing.Router`) is written as generators that *yield commands* — call this
backend with this request within this many seconds, ask it for metadata, sleep, start a leg,
wait for legs, cancel legs — and *receive outcomes*: the answer sent back in, or the exception
thrown in. `Client` and `AsyncClient` are two drivers that perform the commands with blocking
calls and threads, or with awaits and tasks. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from strato._breaker import Breaker, BreakerConfig, LatencyTracker
from strato._transports.base import NO_LIMIT

if TYPE_CHECKING:
    from strato._inference import InferRequest
    from strato._transports.base import AsyncTransport, Transport

__all__ = [
    "Backend",
    "Call",
    "Cancel",
    "Finished",
    "Hop",
    "Metadata",
    "ModelInfo",
    "Sleep",
    "Start",
    "Steps",
    "Wait",
]

T = TypeVar("T")
Steps = Generator[Any, Any, T]  # yields commands, is sent outcomes, returns T


class Backend:
    """One transport as the core sees it: its tier, breaker, recent latencies, payload budget."""

    __slots__ = (
        "answer_tier",
        "breaker",
        "in_process",
        "latency",
        "limited",
        "name",
        "tier",
        "transport",
    )

    def __init__(self, transport: Transport | AsyncTransport, breaker: BreakerConfig) -> None:
        self.transport: Any = transport
        self.name = transport.name
        self.tier = transport.tier
        self.in_process = bool(getattr(transport, "in_process", False))
        # An unlimited transport (in-process) skips the payload arithmetic on every call.
        self.limited = getattr(transport, "payload_limit", NO_LIMIT) < NO_LIMIT
        self.breaker = Breaker(breaker)
        self.latency = LatencyTracker()
        # `Prediction.tier` for its answers: `local` for an in-process engine, else the tier.
        self.answer_tier = "local" if self.in_process else self.tier

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, tier={self.tier!r}, {self.breaker!r})"


@dataclass(slots=True)
class Call:
    """Send `request` to `backend`'s transport (`infer(request, timeout=timeout)`)."""

    backend: Backend
    request: InferRequest
    timeout: float


@dataclass(slots=True)
class Metadata:
    """Ask `backend`'s transport for `model`'s OIP metadata."""

    backend: Backend
    model: str


@dataclass(slots=True)
class Sleep:
    """Wait `seconds` (a retry's backoff)."""

    seconds: float


@dataclass(slots=True)
class Start:
    """Run `steps` concurrently (a hedge leg); the driver answers with an opaque handle."""

    steps: Steps[Any]


@dataclass(slots=True)
class Wait:
    """Wait up to `timeout` seconds until one of `handles` finishes; the driver answers with
    the `Finished` legs (an empty list when none finished in time)."""

    handles: list[Any]
    timeout: float


@dataclass(slots=True)
class Cancel:
    """Stop the legs behind `handles` (their answers, if any, are dropped)."""

    handles: list[Any]


@dataclass(slots=True)
class Finished:
    """A leg that ended: its return `value`, or the `error` it raised."""

    handle: Any
    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class ModelInfo:
    """What the core needs from a model's metadata, read once per model."""

    input_names: list[str]
    cloud_allowed: bool = True
    temperature: float = 1.0
    threshold: float | None = None
    threshold_status: str | None = None
    edge_share: float | None = None
    labels: list[str] = field(default_factory=list)
    version: str | None = None  # the version the edge serves (for require_same_version)
    single_input: str | None = None  # the input's name when the model takes exactly one
    task: str | None = None  # the manifest's task, when the tier says
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.input_names) == 1:
            self.single_input = self.input_names[0]

    @classmethod
    def from_metadata(
        cls, metadata: dict[str, Any], *, from_edge: bool, private: bool
    ) -> ModelInfo:
        """From OIP model metadata with strato's `parameters` (labels, calibration, task...)."""
        parameters = metadata.get("parameters") or {}
        calibration = parameters.get("calibration") or {}
        threshold = calibration.get("cascade_threshold")
        share = calibration.get("edge_share")
        task = parameters.get("task")
        return cls(
            input_names=[str(spec["name"]) for spec in metadata.get("inputs") or []],
            cloud_allowed=not private and parameters.get("cloud", "allowed") != "never",
            temperature=float(calibration.get("temperature") or 1.0),
            threshold=None if threshold is None else float(threshold),
            threshold_status=calibration.get("threshold_status"),
            edge_share=None if share is None else float(share),
            labels=[str(label) for label in parameters.get("labels") or []],
            version=served_version(metadata) if from_edge else None,
            task=None if task is None else str(task),
            outputs={
                str(spec["name"]): tuple(int(d) for d in spec.get("shape") or ())
                for spec in metadata.get("outputs") or []
            },
        )


# The hot path's whole plan — one call to a healthy first backend that needs no payload chunks —
# as (backend, request, start, deadline, info, plan): a plain tuple, since one is built per call
# (a class instance costs ten times as much). The driver performs the call and hands the answer
# (or the exception) back to the core.
Hop = tuple[Backend, "InferRequest", float, float, ModelInfo, list[Backend]]


def served_version(metadata: dict[str, Any]) -> str | None:
    """The version a tier serves: `parameters.version` (the edge daemon names it), else the only
    one listed. `versions` lists every installed version, so with several it says nothing."""
    parameters = metadata.get("parameters") or {}
    if parameters.get("version") is not None:
        return str(parameters["version"])
    versions = metadata.get("versions") or []
    return str(versions[0]) if len(versions) == 1 else None
