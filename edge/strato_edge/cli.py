"""Typer sub-app for this package (filled in by its issue)."""

from __future__ import annotations

import typer

app = typer.Typer(help="(not built yet)", no_args_is_help=True)
