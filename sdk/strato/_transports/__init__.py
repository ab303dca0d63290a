"""Transports: how the client reaches a tier (in-process, the edge daemon, the cloud)."""

from __future__ import annotations

from .base import AsyncTransport, Transport
from .local import Local

__all__ = ["AsyncTransport", "Local", "Transport"]
