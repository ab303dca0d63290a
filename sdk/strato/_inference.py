"""What goes through the client: the request a transport sends, the response it gets back, and
the `Prediction` (with its provenance) or `Classification` the caller receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Classification", "InferRequest", "InferResponse", "Prediction"]


@dataclass(slots=True)
class InferRequest:
    """One inference request as a transport sends it: named input tensors for `model`.

    `version` pins one version (``None``: whatever the backend serves), `id` is echoed back
    (the outbox uses it as an idempotency key), `outputs` names the outputs wanted (``None``:
    all), `parameters` are OIP request parameters.
    """

    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    version: str | None = None
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    # Written out (dataclass leaves an explicit __init__ alone): one is built per call, and the
    # generated one's default-factory check costs a third of it.
    def __init__(
        self,
        model: str,
        inputs: dict[str, np.ndarray[Any, Any]],
        version: str | None = None,
        id: str | None = None,
        outputs: tuple[str, ...] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.version = version
        self.id = id
        self.outputs = outputs
        self.parameters = {} if parameters is None else parameters


@dataclass(slots=True)
class InferResponse:
    """One backend's answer: output tensors by name, the model name and version that produced
    them, `served_by` (the transport's name) and the artifact's `precision` when it says."""

    outputs: dict[str, np.ndarray[Any, Any]]
    model_name: str
    model_version: str
    id: str | None = None
    served_by: str = ""
    precision: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Prediction:
    """What came back, and where from.

    `served_by` is the transport's name (`edge+lambda` when a cascade merged rows from both),
    `tier` the tier that answered — `"edge"` (the device daemon), `"cloud"`, `"local"` (an
    engine in this process), or both joined (`"edge+cloud"`, `"local+cloud"`) for a cascade answer
    whose rows came from two tiers — `route_reason` why
    it went there, `attempts` how many calls it took (retries and payload chunks included).
    """

    outputs: dict[str, np.ndarray[Any, Any]]
    served_by: str
    model_name: str
    model_version: str
    latency_ms: float
    precision: str | None = None
    route_reason: str = ""
    attempts: int = 1
    tier: str = ""

    @property
    def output(self) -> np.ndarray[Any, Any]:
        """The first (for classifiers, the only) output."""
        return next(iter(self.outputs.values()))


@dataclass(slots=True)
class Classification:
    """A classifier's answer per row: `labels` (the manifest's names, else the class index),
    calibrated `probabilities` (softmax at the manifest's temperature), the class `indices`,
    and the `prediction` they came from."""

    labels: list[str]
    probabilities: np.ndarray[Any, Any]
    indices: np.ndarray[Any, Any]
    prediction: Prediction = field(repr=False)

    @property
    def confidence(self) -> np.ndarray[Any, Any]:
        """The top calibrated probability of each row."""
        import numpy as np

        return np.asarray(self.probabilities.max(axis=-1))
