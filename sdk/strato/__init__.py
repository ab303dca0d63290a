"""strato: train once, serve on the edge and in the cloud, route every call with one client."""

from __future__ import annotations

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
from ._registry import ModelRef, Registry
from ._tensors import TensorSpec
from ._transports import AsyncTransport, Local, Transport

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "AsyncTransport",
    "Bundle",
    "BundleError",
    "Classification",
    "Client",
    "ConfigError",
    "EngineMismatch",
    "ExportError",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "IntegrityError",
    "InvalidInput",
    "Local",
    "Manifest",
    "ModelNotFound",
    "ModelRef",
    "ParityError",
    "Prediction",
    "QuantizationError",
    "Registry",
    "SignatureError",
    "StratoError",
    "TensorSpec",
    "Throttled",
    "Timeout",
    "Transport",
    "TransportError",
    "Unavailable",
    "__version__",
]
