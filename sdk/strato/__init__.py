"""strato: train once, serve on the edge and in the cloud, route every call with one client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._bundle import Artifact, Bundle, Manifest, make_bundle
from ._errors import (
    BundleError,
    ConfigError,
    DatasetError,
    DowngradeRefused,
    EngineError,
    EngineMismatch,
    ExportError,
    InferenceError,
    IntegrityError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    ParityError,
    PayloadTooLarge,
    QuantizationError,
    SignatureError,
    StratoError,
    Throttled,
    Timeout,
    TransportError,
    Unauthorized,
    Unavailable,
    VersionExists,
    VersionMismatch,
)
from ._registry import ModelRef, Registry
from ._tensors import TensorSpec

if TYPE_CHECKING:
    from . import policies
    from ._async_client import AsyncClient
    from ._breaker import BreakerConfig
    from ._client import Client
    from ._inference import Classification, InferRequest, InferResponse, Prediction
    from ._outbox import FailedRequest, FlushReport, Outbox, Queued
    from ._transports import AsyncEdge, AsyncTransport, Edge, Lambda, Local, SageMaker, Transport
    from .policies import Retry

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "AsyncClient",
    "AsyncEdge",
    "AsyncTransport",
    "BreakerConfig",
    "Bundle",
    "BundleError",
    "Classification",
    "Client",
    "ConfigError",
    "DatasetError",
    "DowngradeRefused",
    "Edge",
    "EngineError",
    "EngineMismatch",
    "ExportError",
    "FailedRequest",
    "FlushReport",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "IntegrityError",
    "InvalidInput",
    "Lambda",
    "Local",
    "Manifest",
    "ModelNotFound",
    "ModelRef",
    "ModelUnavailable",
    "Outbox",
    "ParityError",
    "PayloadTooLarge",
    "Prediction",
    "QuantizationError",
    "Queued",
    "Registry",
    "Retry",
    "SageMaker",
    "SignatureError",
    "StratoError",
    "TensorSpec",
    "Throttled",
    "Timeout",
    "Transport",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "VersionExists",
    "VersionMismatch",
    "__version__",
    "make_bundle",
    "policies",
]

# Loaded on first use: asyncio and httpx cost ~0.2 s of a Lambda cold start that never uses them,
# and the client side (routing, policies, breaker, outbox with sqlite3, transports, the client's
# request/response types) is no server's business: the Lambda handler imports none of it.
_LAZY = {
    "AsyncClient": "strato._async_client",
    "BreakerConfig": "strato._breaker",
    "Classification": "strato._inference",
    "Client": "strato._client",
    "InferRequest": "strato._inference",
    "InferResponse": "strato._inference",
    "Prediction": "strato._inference",
    "FailedRequest": "strato._outbox",
    "FlushReport": "strato._outbox",
    "Outbox": "strato._outbox",
    "Queued": "strato._outbox",
    "Retry": "strato.policies",
    "policies": "strato.policies",  # the module itself
    "AsyncEdge": "strato._transports",
    "AsyncTransport": "strato._transports",
    "Local": "strato._transports",
    "Transport": "strato._transports",
    "Edge": "strato._transports",
    "Lambda": "strato._transports",
    "SageMaker": "strato._transports",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'strato' has no attribute {name!r}")
    from importlib import import_module

    imported = import_module(module)
    value = imported if module == f"strato.{name}" else getattr(imported, name)
    globals()[name] = value
    return value
