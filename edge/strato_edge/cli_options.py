"""Options and helpers shared by the `strato edge` command modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from strato.cli import JsonOpt, print_json

from strato_edge.config import DEFAULT_STORE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_URL",
    "JsonOpt",
    "StoreOpt",
    "TokenOpt",
    "UrlOpt",
    "echo_json",
    "fail",
    "run_with_bar",
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


def run_with_bar(
    work: Callable[[], Any], poll: Callable[[Any, Any], None], *columns: Any, **fields: Any
) -> Any:
    """Run `work` in a thread while `poll(bar, task)` refreshes a rich progress bar (on stderr,
    gone when done); its result or exception comes back here."""
    import threading

    from rich.console import Console
    from rich.progress import Progress

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="strato-cli-work", daemon=True)
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=None, **fields)
        thread.start()
        while thread.is_alive():
            poll(bar, task)
            thread.join(0.1)
        poll(bar, task)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
