"""`strato edge install-service | greengrass-component`: the daemon on a fleet of devices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strato_edge.cli_options import JsonOpt, echo_json

__all__ = ["register"]

HostOpt = Annotated[str, typer.Option(help="Address the daemon binds; non-loopback needs a token.")]
PortOpt = Annotated[int, typer.Option(help="HTTP port of the daemon.")]
IntervalOpt = Annotated[
    float, typer.Option(help="Seconds between registry checks of `edge pull --watch`.")
]


def register(app: typer.Typer) -> None:
    """Add the fleet commands to the `strato edge` app."""
    app.command("install-service")(install_service)
    app.command("greengrass-component")(greengrass_component)


def install_service(
    model: Annotated[
        str | None,
        typer.Option(help="NAME@ALIAS to follow with a second unit running `edge pull --watch`."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            "-r",
            help="Registry the pull unit follows (required with --model; written into the unit).",
        ),
    ] = None,
    store: Annotated[Path, typer.Option(help="Device store (absolute).")] = Path(
        "/var/lib/strato/registry"
    ),
    user: Annotated[str, typer.Option(help="Dedicated system user the units run as.")] = "strato",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    grpc_port: Annotated[
        int | None, typer.Option(help="Also serve KServe v2 gRPC on this port.")
    ] = None,
    interval: IntervalOpt = 30.0,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token for the env file (generated for a non-loopback bind)."),
    ] = None,
    gpu: Annotated[bool, typer.Option(help="Join group `video` (Jetson GPU device nodes).")] = True,
    executable: Annotated[
        Path | None, typer.Option(help="The strato executable (default: this venv's).")
    ] = None,
    env_file: Annotated[Path, typer.Option(help="EnvironmentFile for secrets.")] = Path(
        "/etc/strato/edge.env"
    ),
    unit_dir: Annotated[Path, typer.Option(help="Where unit files go.")] = Path(
        "/etc/systemd/system"
    ),
    root: Annotated[
        Path, typer.Option(help="Write under this folder instead of / (a DESTDIR, an image).")
    ] = Path("/"),
    as_json: JsonOpt = False,
) -> None:
    """Write systemd units that run the daemon (and its sync agent) as a hardened service.

    Example: strato edge install-service --model digits-mlp@prod --registry s3://models/strato
    """
    from strato_edge.service_unit import ServiceSpec, default_executable, write_service

    spec = ServiceSpec(
        executable=(executable or default_executable()).absolute(),
        store=store,
        user=user,
        host=host,
        port=port,
        grpc_port=grpc_port,
        model=model,
        registry=_absolute(registry),
        interval_s=interval,
        environment_file=env_file,
        gpu=gpu,
    )
    files = write_service(spec, root=root, unit_dir=unit_dir, token=token)
    if as_json:
        echo_json(
            {
                "units": [str(p) for p in files.units],
                "environment_file": str(files.environment_file),
                "sysusers": str(files.sysusers),
                "token_generated": files.token is not None and token is None,
            }
        )
        return
    for path in files.all:
        typer.echo(f"wrote {path}")
    if files.token is not None and token is None:
        typer.echo(f"a bearer token for clients is in {files.environment_file} (mode 0600)")
    units = " ".join(p.name for p in files.units)
    typer.echo(
        f"next: systemd-sysusers && systemctl daemon-reload && systemctl enable --now {units}"
    )


def _absolute(registry: str | None) -> str | None:
    # The units run in `/`: a relative folder would name another place there.
    if registry is None or registry.startswith("s3://"):
        return registry
    return str(Path(registry).absolute())


def greengrass_component(
    model: Annotated[str, typer.Option(help="NAME@ALIAS (or NAME:VERSION) the devices serve.")],
    registry: Annotated[
        str,
        typer.Option(
            "--registry", "-r", help="Registry the devices pull from."
        ),
    ],
    artifacts_uri: Annotated[
        str, typer.Option(help="s3://bucket/prefix the artifact scripts are uploaded to.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the recipe and artifacts.")
    ] = Path("greengrass"),
    name: Annotated[str, typer.Option(help="Component name.")] = "com.strato.EdgeServer",
    component_version: Annotated[
        str, typer.Option(help="Component version (MAJOR.MINOR.PATCH).")
    ] = "1.0.0",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    interval: IntervalOpt = 30.0,
    s3_endpoint: Annotated[
        str, typer.Option(help="S3 endpoint the devices use (default: AWS).")
    ] = "",
    pip_requirement: Annotated[
        str | None, typer.Option(help="What Install pip-installs (default: this strato).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write an AWS IoT Greengrass v2 component (recipe + artifacts) that serves a model.

    Example: strato edge greengrass-component --model digits-mlp@prod
    --registry s3://models/strato --artifacts-uri s3://my-bucket/greengrass
    """
    from strato_edge.greengrass import ComponentSpec, write_component

    extra = {"pip_requirement": pip_requirement} if pip_requirement else {}
    spec = ComponentSpec(
        model=model,
        registry=registry,
        artifacts_uri=artifacts_uri,
        name=name,
        version=component_version,
        host=host,
        port=port,
        interval_s=interval,
        s3_endpoint=s3_endpoint,
        **extra,
    )
    files = write_component(spec, output)
    if as_json:
        echo_json(
            {
                "recipe_json": str(files.recipe_json),
                "recipe_yaml": str(files.recipe_yaml),
                "artifacts": [str(p) for p in files.artifacts],
            }
        )
        return
    for path in (files.recipe_json, files.recipe_yaml, *files.artifacts):
        typer.echo(f"wrote {path}")
    typer.echo(
        f"next: aws s3 cp --recursive {output / 'artifacts'} {spec.artifacts_uri} && "
        f"aws greengrassv2 create-component-version --inline-recipe fileb://{files.recipe_json}"
    )
