"""The `strato` command. Sub-apps come from the `strato.cli` entry-point group, so this module
imports none of them (and no torch, onnxruntime or boto3) until a command runs.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_options import (
    JsonOpt,
    RegistryOpt,
    S3EndpointOpt,
    console,
    fail,
    print_json,
    registry_option,
)
from ._cli_trust import register as _register_trust_commands
from ._errors import ConfigError, StratoError, Unavailable

__all__ = ["app", "main", "print_json", "registry_option"]

app = typer.Typer(
    name="strato",
    help="Train once, serve on Jetson and AWS, route every prediction with one client.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"strato {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train once, serve on Jetson and AWS, route every prediction with one client."""


models_app = typer.Typer(help="List, inspect, promote and roll back models in a registry.")
app.add_typer(models_app, name="models")


def _registry(root: str | None, s3_endpoint: str | None = None) -> Any:
    from ._registry import Registry, default_registry_root

    url = default_registry_root(root)
    if not url.startswith("s3://"):
        if not Path(url).is_dir():
            raise ConfigError(f"registry folder {url} does not exist")
        return Registry(url)
    if not s3_endpoint:
        return Registry(url)
    from ._settings import make_s3_client

    return Registry(url, s3_client=make_s3_client(s3_endpoint))


@models_app.command("ls")
def models_ls(
    registry: RegistryOpt = None, s3_endpoint: S3EndpointOpt = None, as_json: JsonOpt = False
) -> None:
    """List models, their versions and aliases.

    Example: strato models ls --registry .strato/registry
    """
    reg = _registry(registry, s3_endpoint)
    rows = [
        {"name": name, "versions": reg.versions(name), "aliases": reg.aliases(name)}
        for name in reg.models()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("model", "versions", "aliases", title=f"registry {reg.url}")
    for row in rows:
        aliases = ", ".join(f"{a}→{v}" for a, v in row["aliases"].items())
        table.add_row(row["name"], ", ".join(row["versions"]), aliases or "-")
    console().print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a version's manifest: signature, artifacts, metrics, calibration.

    Example: strato models show digits-mlp@prod
    """
    manifest = _registry(registry, s3_endpoint).manifest(ref).to_dict()
    if as_json:
        print_json(manifest)
        return
    typer.echo(f"{manifest['name']}:{manifest['version']}  created {manifest['created']}")
    for spec in manifest["inputs"]:
        typer.echo(f"  input  {spec['name']} {spec['datatype']} {spec['shape']}")
    for spec in manifest["outputs"]:
        typer.echo(f"  output {spec['name']} {spec['datatype']} {spec['shape']}")
    for artifact in manifest["artifacts"]:
        precision = artifact.get("precision") or ""
        typer.echo(
            f"  {artifact['kind']:9} {artifact['path']:28} {precision:5} "
            f"{artifact['size'] / 1024:9.1f} KiB  sha256 {artifact['sha256'][:12]}"
        )
    if manifest.get("metrics"):
        typer.echo("  metrics " + json.dumps(manifest["metrics"], default=str)[:400])
    if manifest.get("calibration"):
        typer.echo("  calibration " + json.dumps(manifest["calibration"]))


@models_app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to point the alias at.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "prod",
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
) -> None:
    """Point an alias (default `prod`) at a version.

    Example: strato models promote digits-mlp:2 --alias prod
    """
    reg = _registry(registry, s3_endpoint)
    resolved = reg.resolve(ref)
    assert resolved.version is not None
    reg.promote(resolved.name, resolved.version, alias)
    typer.echo(f"{resolved.name}@{alias} → {resolved.version}")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "prod",
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
) -> None:
    """Point an alias back at the version it named before.

    Example: strato models rollback digits-mlp --alias prod
    """
    version = _registry(registry, s3_endpoint).rollback(name, alias)
    typer.echo(f"{name}@{alias} → {version}")


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Also remove a version an alias names (the alias goes).")
]


@models_app.command("rm")
def models_rm(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to delete.")],
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete one version (refused for an aliased version unless --force).

    Example: strato models rm digits-mlp:1
    """
    reg = _registry(registry, s3_endpoint)
    resolved = reg.resolve(ref)
    version = str(resolved.version)
    dropped = reg.remove(resolved.name, version, force=force)
    if as_json:
        print_json({"model": resolved.name, "removed": [version], "aliases_dropped": dropped})
        return
    typer.echo(f"removed {resolved.name}:{version}")
    for alias in dropped:
        typer.echo(f"  alias @{alias} dropped with it")


@models_app.command("prune")
def models_prune(
    name: Annotated[str, typer.Argument(help="Model name.")],
    keep: Annotated[int, typer.Option(help="Newest versions to keep.")] = 3,
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete all but the newest --keep versions; aliased ones stay unless --force.

    Example: strato models prune digits-mlp --keep 2
    """
    removed = _registry(registry, s3_endpoint).prune(name, keep=keep, force=force)
    if as_json:
        print_json({"model": name, "removed": removed})
        return
    typer.echo(f"{name}: removed {', '.join(removed)}" if removed else f"{name}: nothing to prune")


def load_array(path: Path) -> Any:
    """Inputs from .npy (one array), .json (a nested list) or .npz (every array, by name)."""
    import numpy as np

    if not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    if path.suffix not in (".npy", ".npz", ".json"):
        raise ConfigError(f"{path}: expected a .npy, .npz or .json file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            if not arrays:
                raise ConfigError(f"{path} holds no arrays")
            return arrays
        return np.asarray(json.loads(path.read_text()), dtype=np.float32)
    except (OSError, ValueError, EOFError, IndexError) as exc:
        raise ConfigError(f"cannot read {path} as {path.suffix[1:]}: {exc}") from None


def _named_inputs(x: Any, metadata: dict[str, Any], path: Path) -> Any:
    """An .npz's arrays go to the inputs of the same names; a lone array to a one-input model."""
    names = [spec["name"] for spec in metadata.get("inputs", [])]
    if not isinstance(x, dict):
        return x
    if len(x) == 1 and len(names) == 1 and names[0] not in x:
        return next(iter(x.values()))
    missing = [n for n in names if n not in x]
    unknown = [n for n in x if n not in names]
    if missing or unknown:
        raise ConfigError(
            f"{path} holds {sorted(x)} but the model takes {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (not inputs: {unknown})" if unknown else "")
        )
    return {n: x[n] for n in names}


@app.command("predict")
def predict(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    input: Annotated[
        Path,
        typer.Option("--input", "-i", help=".npz (arrays named as the inputs), .npy or .json."),
    ],
    registry: RegistryOpt = None,
    url: Annotated[
        str | None,
        typer.Option("--url", "-u", help="A running edge daemon instead of the registry."),
    ] = None,
    s3_endpoint: S3EndpointOpt = None,
    edge: Annotated[
        str | None, typer.Option("--edge", hidden=True, help="Old spelling of --url.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict the rows of an input file: labels for classifiers, output values otherwise.

    --input is required: the rows are always yours, never filled at random.

    Example: strato predict digits-mlp -i x.npy

    Example: strato predict encoder -i sentences.npz --url http://127.0.0.1:8000 --json
    """
    from ._client import Client
    from ._transports import Local

    if url and edge and url != edge:
        raise fail(f"--url {url} and its old spelling --edge {edge} disagree", 2)
    daemon = url or edge
    raw = load_array(input)
    transport: Any
    version = None
    if daemon:
        from ._transports.edge import Edge

        model, version = _daemon_ref(model)
        transport = Edge(daemon)
    else:
        transport = Local(_registry(registry, s3_endpoint))
    with Client(edge=transport) as client:
        try:
            metadata = client.metadata(model)
        except Unavailable as exc:
            if not daemon:
                raise
            raise fail(f"{exc}; is `strato edge serve` running at {daemon}?") from None
        x = _named_inputs(raw, metadata, input)
        task = metadata.get("parameters", {}).get("task", "classification")
        if task == "classification" and len(metadata.get("outputs", [])) == 1:
            _print_classes(client.classify(model, x, version=version), as_json)
        else:
            _print_values(client.predict(model, x, version=version), task, as_json)


def _daemon_ref(model: str) -> tuple[str, str | None]:
    """`NAME` or `NAME:VERSION` for a daemon, which serves versions; an alias is the registry's."""
    from ._registry import ModelRef

    ref = ModelRef.parse(model)
    if ref.alias:
        raise fail(
            f"--url: a daemon serves versions, not aliases; pass {ref.name} or "
            f"{ref.name}:VERSION (`strato edge status` shows what it serves)",
            2,
        )
    return ref.name, ref.version


def _footer(pred: Any) -> None:
    typer.echo(
        f"# {pred.model_name}:{pred.model_version} served_by={pred.served_by} "
        f"{pred.latency_ms:.2f} ms",
        err=True,
    )


def _header(pred: Any) -> dict[str, Any]:
    return {
        "model": f"{pred.model_name}:{pred.model_version}",
        "served_by": pred.served_by,
        "latency_ms": round(pred.latency_ms, 3),
    }


def _print_classes(result: Any, as_json: bool) -> None:
    rows = [
        {"label": label, "confidence": round(float(conf), 4)}
        for label, conf in zip(result.labels, result.confidence.ravel(), strict=True)
    ]
    pred = result.prediction
    if as_json:
        print_json({**_header(pred), "predictions": rows})
        return
    for row in rows:
        typer.echo(f"{row['label']}\t{row['confidence']:.4f}")
    _footer(pred)


def _print_values(pred: Any, task: str, as_json: bool) -> None:
    import numpy as np

    if as_json:
        outputs = {name: value.tolist() for name, value in pred.outputs.items()}
        print_json({**_header(pred), "task": task, "outputs": outputs})
        return
    with np.printoptions(precision=6, suppress=True, threshold=200, linewidth=100):
        for name, value in pred.outputs.items():
            typer.echo(f"{name} {value.dtype} {list(value.shape)}")
            typer.echo(str(value))
    _footer(pred)


def _load_plugins() -> None:
    for entry in entry_points(group="strato.cli"):
        try:
            plugin = entry.load()
        except ImportError as exc:  # an extra that is not installed

            @app.command(entry.name, help=f"(unavailable: {exc})", hidden=True)
            def _missing(exc: ImportError = exc) -> None:  # pragma: no cover
                raise fail(f"this command needs an extra that is not installed: {exc}")

            continue
        if isinstance(plugin, typer.Typer):
            app.add_typer(plugin, name=entry.name)
        else:
            plugin(app)


_register_trust_commands(models_app)
_load_plugins()


def _describe(exc: BaseException) -> str:
    """One line for an exception no command translated: what failed, never a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main() -> None:
    """The console script: exit 0 when the work is done, 1 when it failed, 2 for a usage error
    (click's own, and `ConfigError`: a setting that cannot work). No traceback unless
    STRATO_DEBUG=1."""
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except StratoError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("STRATO_DEBUG"):
            raise
        typer.secho(
            f"error: {_describe(exc)} (STRATO_DEBUG=1 shows the traceback)", fg="red", err=True
        )
        sys.exit(1)
