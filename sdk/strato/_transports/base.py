"""The transport base: a tiny contract, not a framework (like httpx's BaseTransport)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strato._inference import InferRequest, InferResponse

__all__ = [
    "HEADER_ALLOWANCE",
    "NO_LIMIT",
    "AsyncTransport",
    "Transport",
    "binary_tensor_budget",
]

# Bytes kept free in a request for its JSON header (names, datatypes, shapes, parameters).
HEADER_ALLOWANCE = 4096
# `payload_limit` of a transport with none (an engine in this process): the client never splits.
NO_LIMIT = sys.maxsize


def binary_tensor_budget(payload_limit: int, inputs: int) -> int:
    """The raw tensor bytes one binary OIP request may carry under `payload_limit`."""
    if payload_limit >= NO_LIMIT:
        return NO_LIMIT
    return max(0, payload_limit - HEADER_ALLOWANCE - 256 * inputs)


class Transport:
    """One tier the client can send a request to.

    `infer` raises `TransportError` subclasses when the tier cannot answer (the router may
    go elsewhere) and `InferenceError` subclasses when the request is wrong (it never will).
    `metadata` is the OIP model metadata, with strato's `parameters` (labels, calibration,
    cloud policy) when the tier serves a strato bundle.
    """

    name: str = "transport"
    tier: str = "edge"  # "edge" or "cloud": where the privacy gate draws its line
    # The most bytes one request may be, as the tier counts them (NO_LIMIT: none).
    payload_limit: int = 8 * 1024 * 1024
    in_process: bool = False  # an engine in this process (`Prediction.tier == "local"`)

    def max_tensor_bytes(self, inputs: int) -> int:
        """The raw tensor bytes of `inputs` tensors one request may carry under
        `payload_limit` (binary OIP: the body plus a JSON header). The client splits rows to
        stay within it."""
        return binary_tensor_budget(self.payload_limit, inputs)

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """Send `request`; answer within `timeout` seconds (`Timeout` otherwise)."""
        raise NotImplementedError

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """OIP model metadata of `model` (strato's extras under `parameters`)."""
        raise NotImplementedError

    def ready(self, model: str) -> bool:
        """Does this tier answer `model`'s metadata? (Never raises.)"""
        from strato._errors import StratoError

        try:
            self.metadata(model)
        except StratoError:
            return False
        return True

    def close(self) -> None:
        """Release connections; safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTransport:
    """The async twin of `Transport`."""

    name: str = "transport"
    tier: str = "edge"
    payload_limit: int = 8 * 1024 * 1024
    in_process: bool = False

    def max_tensor_bytes(self, inputs: int) -> int:
        """As `Transport.max_tensor_bytes`."""
        return binary_tensor_budget(self.payload_limit, inputs)

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """As `Transport.infer`, awaited."""
        raise NotImplementedError

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """As `Transport.metadata`, awaited."""
        raise NotImplementedError

    async def ready(self, model: str) -> bool:
        """Does this tier answer `model`'s metadata? (Never raises.)"""
        from strato._errors import StratoError

        try:
            await self.metadata(model)
        except StratoError:
            return False
        return True

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
