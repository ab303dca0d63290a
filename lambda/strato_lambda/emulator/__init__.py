"""The local Lambda emulator behind `strato cloud local` (no Docker): the Invoke API, an HTTP API
front door that builds API Gateway 2.0 events, and the invocation context both hand the handler.
Standard library only. `InvocationContext` imports nothing heavy, so tests and benchmarks can hand
the handler a context without a server's weight: `Emulator` (http.server, email, ssl) loads on
first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .invocation_context import InvocationContext

if TYPE_CHECKING:
    from .server import INVOKE_PREFIX, Emulator

__all__ = ["INVOKE_PREFIX", "Emulator", "InvocationContext"]


def __getattr__(name: str) -> Any:
    if name not in ("INVOKE_PREFIX", "Emulator"):
        raise AttributeError(f"module 'strato_lambda.emulator' has no attribute {name!r}")
    from . import server

    value = getattr(server, name)
    globals()[name] = value
    return value
