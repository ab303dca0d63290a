"""Options and helpers shared by the `strato edge` command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from strato.cli import JsonOpt, print_json

from strato_edge.config import DEFAULT_STORE

__all__ = [
    "DEFAULT_URL",
    "JsonOpt",
    "StoreOpt",
    "TokenOpt",
    "UrlOpt",
    "echo_json",
    "fail",
    "store_path",
    "with_progress",
]

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        "-s",
        help="Device store folder (a folder registry, or one bundle with manifest.json).",
        envvar="STRATO_EDGE_STORE",
        show_default=DEFAULT_STORE,
    ),
]
UrlOpt = Annotated[
    str,
    typer.Option("--url", "-u", help="A running edge server.", envvar="STRATO_EDGE_URL"),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token.", envvar="STRATO_EDGE_TOKEN", show_default=False),
]
DEFAULT_URL = "http://127.0.0.1:8000"


echo_json = print_json


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def store_path(store: Path | None) -> Path:
    return store if store is not None else Path(DEFAULT_STORE)


def with_progress(label: str, work: Any) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), transient=True) as bar:
        bar.add_task(label, total=None)
        return work()
