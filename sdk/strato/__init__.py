"""strato: train once, serve on the edge and in the cloud, route every call with one client."""

from __future__ import annotations

from . import policies
from ._async_client import AsyncClient
from ._breaker import BreakerConfig
from ._bundle import Artifact, Bundle, Manifest
from ._client import Classification, Client, Prediction
from ._errors import (
    BundleError,
    ConfigError,
    EngineMismatch,
    ExportError,
    InferenceError,
    IntegrityError,
    InvalidInput,
    ModelNotFound,
    ParityError,
    QuantizationError,
    SignatureError,
    StratoError,
    Throttled,
    Timeout,
    TransportError,
    Unavailable,
)
from ._messages import InferRequest, InferResponse
from ._outbox import Queued
from ._registry import ModelRef, Registry
from ._tensors import TensorSpec
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
    "Edge",
    "EngineMismatch",
    "ExportError",
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
    "ParityError",
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
    "Unavailable",
    "__version__",
    "policies",
]
