"""Options and output helpers every `strato` sub-command shares.

Sub-apps import these from here, never from `strato._cli`: that module loads the sub-apps
(entry points) when it is imported, so importing it from a sub-app would be circular.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

__all__ = ["JsonOpt", "RegistryOpt", "fail", "print_json", "registry_option"]

RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        "-r",
        help="Registry root: a folder or s3://bucket/prefix.",
        envvar="STRATO_REGISTRY",
        show_default=".strato/registry",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
registry_option = RegistryOpt


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)
