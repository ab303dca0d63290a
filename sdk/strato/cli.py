"""What a CLI sub-app needs to look like the rest of `strato`: the shared options and output.

Packages add sub-apps through the entry-point group `strato.cli` (a `typer.Typer`, or a function
that receives the root app); they declare `--registry` with `RegistryOpt`, `--json` with
`JsonOpt`, print JSON with `print_json` and exit with a one-line error through `fail`.
Importing this module loads typer only.
"""

from __future__ import annotations

from ._cli_options import (
    JsonOpt,
    RegistryOpt,
    S3EndpointOpt,
    console,
    default_registry,
    fail,
    print_json,
    registry_option,
)

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
