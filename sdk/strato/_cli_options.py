"""Options and output helpers every `strato` sub-command shares.

Sub-apps import these from here, never from `strato._cli`: that module loads the sub-apps
(entry points) when it is imported, so importing it from a sub-app would be circular.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

__all__ = [
    "JsonOpt",
    "RegistryOpt",
    "S3EndpointOpt",
    "console",
    "default_registry",
    "fail",
    "print_json",
    "registry_option",
]

RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        "-r",
        help="Registry root: a folder or s3://bucket/prefix.",
        show_default=".strato/registry",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
S3EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        # no envvar here: strato._settings reads STRATO_S3_ENDPOINT, in one place
        help="S3 endpoint URL for s3:// registries (MinIO, moto, a VPC endpoint); "
        "default: STRATO_S3_ENDPOINT.",
        show_default=False,
    ),
]
registry_option = RegistryOpt


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout (for `--json`)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line `error: ...` on stderr; the `typer.Exit(code)` to raise."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def default_registry(explicit: str | None = None) -> str:
    """The registry a command means: `--registry`, else `STRATO_REGISTRY`, else the default."""
    from ._registry import default_registry_root

    return default_registry_root(explicit)


def console() -> Any:
    """A rich Console for tables: the terminal's width, or unlimited when piped (rich would
    cut every line at 80 columns, and scripts read these)."""
    from rich.console import Console

    found = Console()
    return found if found.is_terminal else Console(width=100_000, soft_wrap=True)
