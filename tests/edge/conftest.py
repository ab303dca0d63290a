"""Edge fixtures: a real uvicorn server on 127.0.0.1 (free port) in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from strato_edge.config import ServeConfig
from strato_edge.daemon import EdgeUvicorn, build_server


class RunningServer:
    def __init__(self, server: EdgeUvicorn, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.bound_port

    @property
    def edge(self) -> Any:
        return self.server.edge

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)


@contextmanager
def running(config: ServeConfig) -> Iterator[RunningServer]:
    config = replace(config, port=0) if config.port == 8000 else config
    server = build_server(config, log_level="warning")
    thread = threading.Thread(target=server.run, name="edge-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the edge server did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


ServerFactory = Callable[..., Any]


@pytest.fixture
def edge_server() -> Iterator[Callable[..., RunningServer]]:
    """`edge_server(store, **ServeConfig fields)` starts a server; all stop at teardown."""
    stack: list[Any] = []

    def start(store: Path, **fields: Any) -> RunningServer:
        fields.setdefault("watch_interval_s", 0.1)
        manager = running(ServeConfig(store=Path(store), port=0, **fields))
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
def tiny_server(tiny_registry: Any, edge_server: Callable[..., RunningServer]) -> RunningServer:
    """A server over `tiny_registry` (tiny:1 served via prod, tiny:2 installed)."""
    return edge_server(Path(tiny_registry.url))
