"""Run the daemon under uvicorn and say where it listens once it is ready."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import uvicorn

from strato_edge.server import create_app

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Generator

    from strato_edge.config import ServeConfig
    from strato_edge.server import EdgeServer

__all__ = ["EdgeUvicorn", "build_server", "serve"]


class EdgeUvicorn(uvicorn.Server):
    """uvicorn's server, plus the announcement line and the real port (for `--port 0`)."""

    announce: Callable[[EdgeUvicorn], None] | None = None
    edge: EdgeServer

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.announce is not None:
            self.announce(self)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown (exit status 143/130); a
        # daemon that drained its requests and stopped cleanly exits 0 instead.
        with super().capture_signals():
            try:
                yield
            finally:
                if self.started:
                    self._captured_signals.clear()

    @property
    def bound_port(self) -> int:
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.bound_port}"


def build_server(config: ServeConfig, *, log_level: str = "warning") -> EdgeUvicorn:
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = EdgeUvicorn(uv_config)
    server.edge = app.state.edge
    return server


def _announce(server: EdgeUvicorn) -> None:
    edge = server.edge
    count = len(edge.store.served())
    mode = " (SageMaker mode)" if edge.config.sagemaker else ""
    print(f"strato edge serving {count} model(s) on {server.url}{mode}", flush=True)
    for name, version in sorted(edge.store.served().items()):
        print(f"  {name}:{version}", flush=True)


def serve(config: ServeConfig, *, log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM."""
    server = build_server(config, log_level=log_level)
    server.announce = _announce
    server.run()
    if not server.started:
        sys.exit(3)
