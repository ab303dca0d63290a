"""Transports: how the client reaches a tier (in-process, the edge daemon, the cloud)."""

from __future__ import annotations

from .aws import Lambda, SageMaker
from .base import AsyncTransport, Transport
from .edge import AsyncEdge, Edge
from .local import Local

__all__ = ["AsyncEdge", "AsyncTransport", "Edge", "Lambda", "Local", "SageMaker", "Transport"]
