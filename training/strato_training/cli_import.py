"""`strato import SOURCE --name NAME --task TASK`: an ONNX file or any nn.Module in, as a bundle.

The command parses arguments and calls `strato_training.importer`; torch loads only when the
source is a module.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from strato.cli import JsonOpt, S3EndpointOpt, print_json, registry_option

__all__ = ["import_command"]


def _progress(quiet: bool) -> Any:
    if quiet:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def import_command(
    source: Annotated[
        str, typer.Argument(help="A .onnx file, or package.module:attr naming an nn.Module.")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name in the registry.")],
    task: Annotated[
        str, typer.Option(help="classification | embedding | regression | detection | generic.")
    ] = "generic",
    example: Annotated[
        Path | None,
        typer.Option(help=".npz with one named array per input (required for a module)."),
    ] = None,
    dynamic: Annotated[
        list[str] | None,
        typer.Option(help="Dynamic axes of an input, e.g. input_ids=0:batch,1:seq (repeatable)."),
    ] = None,
    output_names: Annotated[
        str | None, typer.Option(help="Comma-separated output names (default: the module's).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Class labels: a JSON list or one label per line.")
    ] = None,
    preprocessing: Annotated[
        Path | None,
        typer.Option(help="JSON recipe baked into the graph: layout, dtype, scale, mean, std."),
    ] = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the next number).")] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    atol: Annotated[float, typer.Option(help="Largest difference the parity gate allows.")] = 1e-4,
    exporter: Annotated[str, typer.Option(help="auto | dynamo | legacy.")] = "auto",
    opset: Annotated[int, typer.Option(help="ONNX opset for an exported module.")] = 18,
    optimize_data: Annotated[
        Path | None,
        typer.Option(
            help="Then quantize on these rows (.npz, one array per input), gated by the task."
        ),
    ] = None,
    registry: registry_option = None,
    s3_endpoint: S3EndpointOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import an ONNX file or an nn.Module as a verified bundle (parity gate on every output).

    Example: strato import encoder.onnx --name encoder --task embedding

    Example: strato import mypkg.models:encoder --example ex.npz --name encoder --task embedding
    """
    from strato import Registry

    from strato_training.importer import (
        ImportConfig,
        import_module,
        import_onnx,
        load_examples,
        read_labels,
        read_preprocessing,
    )
    from strato_training.module_export import parse_dynamic

    config = ImportConfig(
        name=name,
        task=task,
        labels=read_labels(labels) if labels else (),
        preprocessing=read_preprocessing(preprocessing) if preprocessing else None,
        version=version,
        alias=alias,
        atol=atol,
        opset=opset,
        exporter=exporter,
        output_names=tuple(n.strip() for n in output_names.split(",")) if output_names else (),
        dynamic=parse_dynamic(dynamic or []),
    )
    examples = load_examples(example) if example else None
    reg = Registry(registry, s3_endpoint=s3_endpoint)
    with _progress(quiet or as_json) as progress:
        job = progress.add_task("import", total=None) if progress is not None else None

        def on_step(text: str) -> None:
            if progress is not None:
                progress.update(job, description=text)

        if source.endswith(".onnx") or Path(source).is_file():
            bundle = import_onnx(source, config, examples=examples, registry=reg, on_step=on_step)
        else:
            if examples is None:
                from strato import ConfigError

                raise ConfigError(f"importing the module {source!r} needs --example FILE.npz")
            bundle = import_module(source, examples, config, registry=reg, on_step=on_step)
        optimized = None
        if optimize_data is not None:
            from strato_training.steps import optimize_imported

            on_step("quantize, gate by task, pick the default")
            optimized = optimize_imported(reg, bundle.ref, optimize_data, alias=alias)
    _report(bundle, reg.url, as_json, optimized.summary if optimized else None)


def _report(bundle: Any, registry: str, as_json: bool, optimized: dict[str, Any] | None) -> None:
    manifest = bundle.manifest
    parity = manifest.metrics["model.onnx"]["parity"]
    if as_json:
        answer = {
            "ref": bundle.ref,
            "registry": registry,
            "task": manifest.task,
            "inputs": [s.to_dict() for s in manifest.inputs],
            "outputs": [s.to_dict() for s in manifest.outputs],
            "parity": parity,
            "exporter": manifest.framework.get("exporter"),
        }
        print_json(answer | ({"optimize": optimized} if optimized else {}))
        return
    typer.echo(f"imported {bundle.ref} ({manifest.task}) into {registry}")
    for spec in manifest.inputs:
        typer.echo(f"  input  {spec.name} {spec.datatype} {list(spec.shape)}")
    for spec in manifest.outputs:
        diff = parity["outputs"][spec.name]["max_abs_diff"]
        typer.echo(
            f"  output {spec.name} {spec.datatype} {list(spec.shape)}  parity max |diff| {diff:.3g}"
        )
    typer.echo(f"  parity vs {parity['reference']} on {len(parity['probes'])} probes")
    if optimized:
        typer.echo(f"optimized into {optimized['ref']}: serving default {optimized['default']}")
