"""`strato train | evaluate | export | publish | quickstart` (filled in by the training package)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the root `strato` app."""
