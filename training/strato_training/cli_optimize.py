"""`strato quantize | calibrate | compile` (filled in by the quantization work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


def register(app: typer.Typer) -> None:
    """Add the optimization commands to the root `strato` app."""
