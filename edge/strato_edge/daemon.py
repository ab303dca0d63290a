"""Run the daemon under uvicorn and say where it listens once it is ready."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import sys
from typing import TYPE_CHECKING, Any

import uvicorn

from strato_edge.coalesce import coalescing
from strato_edge.limits import limited_protocol
from strato_edge.metrics import start_metrics_server
from strato_edge.server import create_app

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Generator

    from strato_edge.config import ServeConfig
    from strato_edge.server import EdgeServer

__all__ = ["EdgeUvicorn", "build_server", "serve"]

log = logging.getLogger("strato.edge.runner")


class EdgeUvicorn(uvicorn.Server):
    """uvicorn's server, plus the announcement line and the real port (for `--port 0`), and
    the gRPC service and the metrics port on the same event loop when configured."""

    announce: Callable[[EdgeUvicorn], None] | None = None
    edge: EdgeServer
    grpc_server: Any = None
    grpc_port: int | None = None
    metrics_server: asyncio.Server | None = None
    metrics_port: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        self.started = False  # "started" means every port is open, the side ports too
        try:
            await self._start_side_ports()
        except (OSError, RuntimeError) as exc:
            log.error("%s", exc)
            self.should_exit = True
            return
        self.started = True
        if self.announce is not None:
            self.announce(self)

    async def _start_side_ports(self) -> None:
        config = self.edge.config
        if config.grpc_port is not None:
            from strato_edge.grpc_service import start_grpc_server

            self.grpc_server, self.grpc_port = await start_grpc_server(
                self.edge, config.host, config.grpc_port
            )
        if config.metrics_port is not None:
            edge = self.edge
            self.metrics_server = await start_metrics_server(
                lambda: edge.metrics.render(edge.store.queue_depth),
                config.host,
                config.metrics_port,
            )
            self.metrics_port = int(self.metrics_server.sockets[0].getsockname()[1])

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(5)
        if self.metrics_server is not None:
            self.metrics_server.close()
        await super().shutdown(sockets)

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
                name = sock.getsockname()
                if isinstance(name, tuple):  # not the Unix socket
                    return int(name[1])
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
        # bounded heads, head deadline, connection cap; a response leaves as one write
        http=coalescing(limited_protocol(config)),
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]  # used as a float
    )
    server = EdgeUvicorn(uv_config)
    server.edge = app.state.edge
    return server


def _announce(server: EdgeUvicorn) -> None:
    edge = server.edge
    count = len(edge.store.served())
    mode = " (SageMaker mode)" if edge.config.sagemaker else ""
    print(f"strato edge serving {count} model(s) on {server.url}{mode}", flush=True)
    host = edge.config.host
    if edge.config.uds is not None:
        print(f"  also on unix://{edge.config.uds}", flush=True)
    if edge.shm is not None:
        print("  system shared memory on (local clients)", flush=True)
    if server.grpc_port is not None:
        print(f"  gRPC (KServe v2) on {host}:{server.grpc_port}", flush=True)
    if server.metrics_port is not None:
        print(f"  metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
    for name, version in sorted(edge.store.served().items()):
        print(f"  {name}:{version}", flush=True)


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path`; a stale one (nobody listening) is replaced."""
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # left behind by a daemon that died
            else:
                raise OSError(f"another server is listening on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o660)  # the owner and its group; the token (if any) still applies
    sock.listen(2048)
    return sock


def serve(config: ServeConfig, *, log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM (on TCP, and on `config.uds` too when set)."""
    server = build_server(config, log_level=log_level)
    server.announce = _announce
    sockets = None
    if config.uds is not None:
        try:
            sockets = [server.config.bind_socket(), bind_unix(config.uds)]
        except OSError as exc:
            print(f"error: cannot listen: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn's own exit when it cannot bind or start: said below, exit 1
        server.started = False
    finally:
        if sockets is not None:
            for sock in sockets:
                sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(config.uds))
    if not server.started:  # uvicorn logged why (a port in use, a model store it cannot read)
        where = f"{config.host}:{config.port}"
        print(f"error: strato edge serve did not start on {where} (see above)", file=sys.stderr)
        sys.exit(1)
