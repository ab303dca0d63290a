"""The system shared-memory endpoints of the daemon (Triton's HTTP paths), for local peers only.

GET  /v2/systemsharedmemory[/region/{name}]/status
POST /v2/systemsharedmemory/region/{name}/register   {"key", "offset", "byte_size"}
POST /v2/systemsharedmemory[/region/{name}]/unregister
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import Route
from strato import InvalidInput, Unauthorized, serving

from strato_edge.config import is_loopback

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from strato_edge.shm import SystemSharedMemory

__all__ = ["require_local", "shm_routes"]

OFF = "system shared memory is off (start the daemon with --allow-shm)"


def require_local(client: Any) -> None:
    """Only a peer on this machine shares its memory: loopback TCP, or the Unix socket (an ASGI
    `client` of None)."""
    if client is not None and not is_loopback(str(client[0])):
        raise Unauthorized(f"shared memory is for clients on this machine, not {client[0]}")


def _json(value: Any) -> Response:
    return Response(serving.dumps(value), 200, media_type="application/json")


def shm_routes(
    shm: SystemSharedMemory | None,
    guarded: Callable[[Callable[[Request], Awaitable[Response]]], Callable[..., Any]],
) -> list[Route]:
    """The routes; with `shm` None (no --allow-shm) every one answers 400 and says why."""

    def regions() -> SystemSharedMemory:
        if shm is None:
            raise InvalidInput(OFF)
        return shm

    async def status(request: Request) -> Response:
        require_local(request.scope.get("client"))
        return _json(regions().status(request.path_params.get("name")))

    async def register(request: Request) -> Response:
        require_local(request.scope.get("client"))
        body = await request.body()
        if len(body) > 4096:
            raise InvalidInput("a register request is a small JSON object")
        regions().register(request.path_params["name"], body)
        return _json({})

    async def unregister(request: Request) -> Response:
        require_local(request.scope.get("client"))
        regions().unregister(request.path_params.get("name"))
        return _json({})

    base = "/v2/systemsharedmemory"
    return [
        Route(f"{base}/status", guarded(status)),
        Route(f"{base}/region/{{name}}/status", guarded(status)),
        Route(f"{base}/region/{{name}}/register", guarded(register), methods=["POST"]),
        Route(f"{base}/region/{{name}}/unregister", guarded(unregister), methods=["POST"]),
        Route(f"{base}/unregister", guarded(unregister), methods=["POST"]),
    ]
