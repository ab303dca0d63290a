"""The exceptions strato raises.

Third-party errors are translated at one boundary per adapter, so callers only ever see
this tree::

    StratoError
    ├── ConfigError
    │   ├── DatasetError
    │   └── Unauthorized               (401: missing or wrong token)
    ├── TransportError                 (routing falls back on these)
    │   ├── Unavailable
    │   │   └── ModelUnavailable       (503: the server's model is not loaded, yet)
    │   ├── Timeout
    │   ├── Throttled
    │   └── VersionMismatch        (answered, but another model version: not a health fault)
    ├── InferenceError                 (never retried, never re-routed)
    │   ├── InvalidInput
    │   │   └── PayloadTooLarge        (413)
    │   └── ModelNotFound
    ├── EngineError                    (503: the engine failed on a valid request)
    ├── BundleError
    │   ├── IntegrityError
    │   ├── SignatureError
    │   ├── EngineMismatch
    │   ├── VersionExists
    │   └── DowngradeRefused
    └── ExportError
        ├── ParityError
        └── QuantizationError
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DatasetError",
    "DowngradeRefused",
    "EngineError",
    "EngineMismatch",
    "ExportError",
    "InferenceError",
    "IntegrityError",
    "InvalidInput",
    "ModelNotFound",
    "ModelUnavailable",
    "ParityError",
    "PayloadTooLarge",
    "QuantizationError",
    "SignatureError",
    "StratoError",
    "Throttled",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "VersionExists",
    "VersionMismatch",
]


class StratoError(Exception):
    """Base of every error strato raises."""


class ConfigError(StratoError):
    """A setting, flag or environment variable is missing or invalid."""


class DatasetError(ConfigError):
    """A dataset spec points at nothing, or at files in a format strato cannot read."""


class Unauthorized(ConfigError):
    """A server refused the call: the bearer token is missing or wrong (HTTP 401)."""

    status_code = 401


class TransportError(StratoError):
    """A backend could not be reached or did not answer in time: safe to retry elsewhere."""

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        failures: tuple[TransportError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.backend = backend
        # When every tier failed: each tier's own failure, in the order they were tried.
        self.failures = failures


class Unavailable(TransportError):
    """Connection refused, reset, DNS failure, 5xx."""


class ModelUnavailable(Unavailable):
    """A server's model could not be loaded (yet): it answers 503 until it can."""

    status_code = 503


class Timeout(TransportError):
    """The backend did not answer within the deadline."""


class Throttled(TransportError):
    """The backend answered 429 / TooManyRequests."""


class VersionMismatch(TransportError):
    """A backend answered with another model version than the edge serves (or the call pinned),
    and the client asked for `require_same_version`: try another tier, but the backend is healthy
    (its circuit breaker does not count it)."""


class InferenceError(StratoError):
    """The request itself is wrong: another backend would refuse it too."""

    status_code = 400


class InvalidInput(InferenceError):
    """Input name, datatype, shape or values do not match the model's signature."""

    status_code = 400


class PayloadTooLarge(InvalidInput):
    """A request (or its answer) is over the body or payload limit (HTTP 413)."""

    status_code = 413


class ModelNotFound(InferenceError):
    """No such model, version or alias."""

    status_code = 404


class EngineError(StratoError):
    """The engine failed to run a request that passed validation: out of memory, a provider
    (CUDA, TensorRT) failure. The request is not at fault, so this is no `InferenceError`:
    servers answer 503 and clients see `Unavailable`, which routing may fail over."""

    status_code = 503


class BundleError(StratoError):
    """A bundle is missing, malformed or cannot be used."""


class IntegrityError(BundleError):
    """A bundle file does not match the sha256 in its manifest."""


class SignatureError(BundleError):
    """A bundle is unsigned, or signed by a key that is not trusted, or the signature is wrong."""


class EngineMismatch(BundleError):
    """A TensorRT plan was built for another TensorRT version, GPU or precision."""


class VersionExists(BundleError):
    """A version is already published (or claimed by a concurrent publisher): versions are
    immutable."""


class DowngradeRefused(BundleError):
    """An alias points below the highest version this device has served; only an explicit
    rollback may do that."""


class ExportError(StratoError):
    """Export, quantization or compilation failed."""


class ParityError(ExportError):
    """An exported artifact's outputs differ from the reference beyond tolerance."""

    def __init__(self, message: str, *, output: str = "", max_abs_diff: float = 0.0) -> None:
        super().__init__(message)
        self.output = output
        self.max_abs_diff = max_abs_diff


class QuantizationError(ExportError):
    """A quantization recipe failed, or its artifact failed the task's gate.

    `recipe` names the recipe (e.g. ``int8-dynamic``), `node` the op or input that failed,
    `output` the model output, `figure`/`value` the gate figure and `row` the worst gate row."""

    def __init__(
        self,
        message: str,
        *,
        recipe: str = "",
        node: str = "",
        output: str = "",
        figure: str = "",
        value: float | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(message)
        self.recipe = recipe
        self.node = node
        self.output = output
        self.figure = figure
        self.value = value
        self.row = row
