"""The transport base: a tiny contract, not a framework (like httpx's BaseTransport)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strato._messages import InferRequest, InferResponse

__all__ = ["AsyncTransport", "Transport"]


class Transport:
    """One tier the client can send a request to.

    `infer` raises `TransportError` subclasses when the tier cannot answer (the router may
    go elsewhere) and `InferenceError` subclasses when the request is wrong (it never will).
    `metadata` is the OIP model metadata, with strato's `parameters` (labels, calibration,
    cloud policy) when the tier serves a strato bundle.
    """

    name: str = "transport"
    tier: str = "edge"  # "edge" or "cloud": where the privacy gate draws its line
    payload_limit: int = 8 * 1024 * 1024

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        raise NotImplementedError

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
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

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        raise NotImplementedError

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
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
