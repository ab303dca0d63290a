"""Transports: how the client reaches a tier (in-process, the edge daemon, the cloud).

`Edge`, `Lambda` and `SageMaker` load httpx (and boto3 when built) on first use, so an
in-process or Lambda-side `import strato` pays for neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AsyncTransport, Transport
from .local import Local

if TYPE_CHECKING:
    from .aws import Lambda, LambdaHttpApi, LambdaInvoke, SageMaker
    from .edge import AsyncEdge, Edge

__all__ = [
    "AsyncEdge",
    "AsyncTransport",
    "Edge",
    "Lambda",
    "LambdaHttpApi",
    "LambdaInvoke",
    "Local",
    "SageMaker",
    "Transport",
]

_LAZY = {
    "AsyncEdge": "edge",
    "Edge": "edge",
    "Lambda": "aws",
    "LambdaHttpApi": "aws",
    "LambdaInvoke": "aws",
    "SageMaker": "aws",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
