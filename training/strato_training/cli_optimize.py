"""`strato quantize | calibrate | compile`: each reads a registry version and publishes the next.

Only argument parsing and printing live here; the work is in `strato_training.optimize` and
`strato_training.tensorrt_build`, imported inside the command bodies so `strato --help` stays light.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from strato.cli import JsonOpt, RegistryOpt, print_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.console import Console

__all__ = ["print_summary", "register"]

RefArg = Annotated[
    str, typer.Argument(help="Registry reference: NAME, NAME:VERSION or NAME@ALIAS.")
]
DatasetOpt = Annotated[
    str,
    typer.Option(help="Dataset the model was trained on: digits, mnist:DIR, npz:PATH, folder:DIR."),
]
SeedOpt = Annotated[int, typer.Option(help="Split seed: must match the one used for training.")]


def _registry(root: str | None) -> Any:
    from strato import Registry

    return Registry(root)


def _dataset(spec: str, seed: int) -> Any:
    from strato_training.data import load_dataset

    return load_dataset(spec, seed=seed)


@contextmanager
def _steps(quiet: bool) -> Iterator[Callable[[str], None] | None]:
    """A rich spinner whose text follows the pipeline's steps (silent for --json)."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda step: progress.update(task, description=step)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """fp32 and every quantized artifact side by side: size, accuracy, agreement, p50 latency."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(
        "artifact",
        "precision",
        "size KiB",
        "x fp32",
        "accuracy",
        "agreement",
        "p50 ms",
        "gate",
        title=f"{summary['ref']} (from {summary['from']})",
    )
    for path, found in summary["artifacts"].items():
        precision = (
            "/".join(str(found[k]) for k in ("precision", "format") if found.get(k)) or "fp32"
        )
        latency = found.get("latency", {})
        table.add_row(
            path + (" *" if path == summary["default"] else ""),
            precision,
            f"{found['size'] / 1024:.1f}",
            f"{found['size_ratio']:.2f}",
            f"{found['accuracy'] * 100:.2f} %",
            f"{found['agreement'] * 100:.1f} %",
            f"{latency['p50_ms']:.3f}" if latency else "-",
            found.get("gate", "reference"),
        )
    console.print(table)
    console.print(f"* serving default: {summary['default']} ({summary['default_reason']})")
    if "calibration" in summary:
        _print_calibration(summary["calibration"], console)


def _print_calibration(found: dict[str, Any], console: Console) -> None:
    console.print(
        f"calibration: temperature {found['temperature']:.3f}, ECE {found['ece_before']:.4f} → "
        f"{found['ece_after']:.4f}; cascade threshold {found['cascade_threshold']:.3f} keeps "
        f"{found['edge_share'] * 100:.1f} % on the edge at precision {found['edge_precision'] * 100:.2f} %"
        f" (target {found['target_precision'] * 100:.1f} %)"
    )


def quantize_command(
    ref: RefArg,
    mode: Annotated[
        str, typer.Option(help="int8-static (QDQ + QOperator), int8-dynamic or fp16.")
    ] = "int8-static",
    registry: RegistryOpt = None,
    dataset: DatasetOpt = "digits",
    seed: SeedOpt = 0,
    samples: Annotated[
        int, typer.Option(help="Training samples the int8 calibration reader sees.")
    ] = 256,
    max_drop: Annotated[
        float, typer.Option(help="Largest test-accuracy drop allowed, in points.")
    ] = 1.0,
    force: Annotated[bool, typer.Option(help="Publish even when the accuracy gate fails.")] = False,
    calibrate: Annotated[
        bool, typer.Option(help="Also fit temperature + cascade threshold.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a model version; gate it on test accuracy; publish it as the next version.

    Example: strato quantize digits-mlp:1 --mode int8-static --max-drop 1.0
    """
    from strato_training.optimize import optimize_bundle, quantize_bundle

    reg, data = _registry(registry), _dataset(dataset, seed)
    options: dict[str, Any] = {
        "modes": (mode,),
        "samples": samples,
        "max_drop": max_drop,
        "force": force,
    }
    with _steps(as_json) as on_step:
        if calibrate:
            _, summary = optimize_bundle(reg, ref, data, on_step=on_step, **options)
        else:
            _, summary = quantize_bundle(reg, ref, data, on_step=on_step, **options)
    if as_json:
        print_json(summary)
        return
    print_summary(summary)


def calibrate_command(
    ref: RefArg,
    registry: RegistryOpt = None,
    dataset: DatasetOpt = "digits",
    seed: SeedOpt = 0,
    target_precision: Annotated[
        float, typer.Option(help="Precision the edge must reach on what it keeps (0-1).")
    ] = 0.99,
    as_json: JsonOpt = False,
) -> None:
    """Fit temperature scaling and the edge/cloud cascade threshold on the validation split.

    Example: strato calibrate digits-mlp:1 --target-precision 0.99
    """
    from rich.console import Console

    from strato_training.optimize import calibrate_bundle

    if not 0.0 < target_precision <= 1.0:
        raise typer.BadParameter("must be in (0, 1]", param_hint="--target-precision")
    _, summary = calibrate_bundle(
        _registry(registry), ref, _dataset(dataset, seed), target_precision=target_precision
    )
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{summary['ref']} (from {summary['from']})")
    _print_calibration(summary["calibration"], Console())


def compile_command(
    ref: RefArg,
    target: Annotated[str, typer.Option(help="Compile target (only tensorrt).")] = "tensorrt",
    precision: Annotated[
        str, typer.Option(help="fp16, int8 (from the QDQ artifact) or fp32.")
    ] = "fp16",
    profile: Annotated[
        str, typer.Option(help="Batch sizes MIN,OPT,MAX the plan accepts.")
    ] = "1,32,256",
    workspace_mib: Annotated[int, typer.Option(help="Builder workspace limit in MiB.")] = 1024,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a TensorRT plan for this device's GPU and add it to the next version.

    Run it on the device (or one with the same GPU and TensorRT): plans are keyed by
    sha256(onnx) + TensorRT version + compute capability + precision.

    Example: strato compile digits-mlp:2 --target tensorrt --precision int8
    """
    from strato_training.tensorrt_build import PRECISIONS, BatchProfile, compile_bundle

    if target != "tensorrt":
        raise typer.BadParameter("only 'tensorrt' is supported", param_hint="--target")
    if precision not in PRECISIONS:
        raise typer.BadParameter(f"choose one of {', '.join(PRECISIONS)}", param_hint="--precision")
    reg = _registry(registry)
    with _steps(as_json) as on_step:
        if on_step is not None:
            on_step(f"building a {precision} TensorRT plan")
        new_ref, plan = compile_bundle(
            reg, ref, precision, profile=BatchProfile.parse(profile), workspace=workspace_mib << 20
        )
    artifact = reg.manifest(new_ref).artifact(f"engines/{plan.key}.plan")
    if as_json:
        print_json({"ref": str(new_ref), "plan": artifact.to_dict()})
        return
    meta = plan.metadata
    typer.echo(
        f"{new_ref}: {artifact.path}  TensorRT {meta['version']}  sm{meta['compute_capability']}  "
        f"{precision}  {artifact.size / 1024:.1f} KiB"
    )


def register(app: typer.Typer) -> None:
    """Add the optimization commands to the root `strato` app."""
    app.command("quantize")(quantize_command)
    app.command("calibrate")(calibrate_command)
    app.command("compile")(compile_command)
