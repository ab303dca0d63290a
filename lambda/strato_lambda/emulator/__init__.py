"""The local Lambda emulator behind `strato cloud local` (no Docker): the Invoke API, an HTTP API
front door that builds API Gateway 2.0 events, and the invocation context both hand the handler.
Standard library only, so tests and benchmarks can import it without a server's weight."""

from __future__ import annotations

from .invocation_context import InvocationContext
from .server import INVOKE_PREFIX, Emulator

__all__ = ["INVOKE_PREFIX", "Emulator", "InvocationContext"]
