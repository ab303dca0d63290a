"""`strato quantize | calibrate | compile`: each reads a registry version and publishes the next.

Only argument parsing and printing live here; the work is in `strato_training.optimize` and
`strato_training.tensorrt_build`, imported inside the command bodies so `strato --help` stays light.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from strato.cli import JsonOpt, RegistryOpt, S3EndpointOpt, print_json
from strato.cli import console as full_width

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.console import Console

__all__ = ["print_summary", "register"]

RefArg = Annotated[
    str, typer.Argument(help="Registry reference: NAME, NAME:VERSION or NAME@ALIAS.")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="Built-in dataset of a trained run: digits, mnist:DIR, npz:PATH, folder:DIR "
        "(default: the one the bundle records)."
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(help="FILE.npz: one named array per model input (calibration + gate rows)."),
]
TargetsOpt = Annotated[
    str | None,
    typer.Option(help="FILE.npy: true classes / values of the --data rows (first output)."),
]
SeedOpt = Annotated[int, typer.Option(help="Split seed: must match the one used for training.")]


def _registry(root: str | None, s3_endpoint: str | None = None) -> Any:
    from strato import Registry

    return Registry(root, s3_endpoint=s3_endpoint)


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


_HEADLINE = {
    "classification": (("accuracy", "accuracy", 100, "%"), ("agreement", "agreement", 100, "%")),
    "embedding": (("cosine_min", "cosine min", 1, "f4"), ("cosine_mean", "cosine mean", 1, "f4")),
    "regression": (("relative_error", "rel. error", 100, "%"), ("r2", "R²", 1, "f4")),
}
_GENERIC = (("max_abs_diff", "max |diff|", 1, ""), ("mean_abs_diff", "mean |diff|", 1, ""))


def _cell(found: dict[str, Any], key: str, scale: float, unit: str) -> str:
    value = found.get(key)
    if value is None:
        return "-"
    if unit == "%":
        return f"{value * scale:.2f} %"
    return f"{value:.4f}" if unit == "f4" else f"{value:.4g}"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """fp32 and every artifact side by side: size, the task's gate figures, p50 latency, and
    which layers a per-layer search kept in fp32."""
    from rich.table import Table

    console = console or full_width()
    columns = _HEADLINE.get(summary.get("task", "classification"), _GENERIC)
    table = Table(
        "artifact",
        "precision",
        "size KiB",
        "x fp32",
        *(label for _, label, _, _ in columns),
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
            *(_cell(found, key, scale, unit) for key, _, scale, unit in columns),
            f"{latency['p50_ms']:.3f}" if latency else "-",
            found.get("gate", "reference"),
        )
    console.print(table)
    for path, found in summary.get("refused", {}).items():
        why = found.get("error") or f"{found.get('gate_figure')} {found.get('gate_value')} "
        why += "" if found.get("error") else f"(limit {found.get('gate_limit')})"
        console.print(f"refused {path}: {why}")
    for path, found in summary["artifacts"].items():
        if found.get("fp32_layers"):
            cost = found.get("cost_vs_uniform", {})
            console.print(
                f"{path} keeps {len(found['fp32_layers'])} layer(s) in fp32: "
                f"{', '.join(found['fp32_layers'])}"
                + (
                    f" (x{cost['size_ratio']:.2f} size, x{cost['latency_ratio']:.2f} latency "
                    "vs the uniform recipe)"
                    if cost
                    else ""
                )
            )
    console.print(f"* serving default: {summary['default']} ({summary['default_reason']})")
    if summary.get("alias"):
        console.print(f"alias {summary['alias']} → {summary['ref']}")
    if "calibration" in summary:
        _print_calibration(summary["calibration"], console)


def _print_calibration(found: dict[str, Any], console: Console) -> None:
    head = (
        f"calibration ({found.get('artifact', 'fp32')}): temperature {found['temperature']:.3f}, "
        f"ECE {found['ece_before']:.4f} → {found['ece_after']:.4f}; "
    )
    if found.get("cascade_threshold") is None:
        console.print(
            head + f"no cascade threshold reaches precision {found['target_precision'] * 100:.1f} "
            "% on validation: every row would go to the cloud"
        )
        return
    console.print(
        head + f"cascade threshold {found['cascade_threshold']:.3f} keeps "
        f"{found['edge_share'] * 100:.1f} % on the edge at precision "
        f"{found['edge_precision'] * 100:.2f} % (target {found['target_precision'] * 100:.1f} %)"
    )


def _data(
    ref: str, registry: Any, data: str | None, targets: str | None, dataset: str | None, seed: int
) -> tuple[Any, Any]:
    """(QuantizeData or None, dataset or None): --data wins; else --dataset; else the dataset
    the bundle was trained on (recorded by strato publish)."""
    from strato_training.quantize_data import QuantizeData

    if data is not None:
        inputs = [spec.name for spec in registry.manifest(ref).inputs]
        return QuantizeData.load(data, targets, input_names=inputs, seed=seed), None
    if targets is not None:
        raise typer.BadParameter("--targets goes with --data", param_hint="--targets")
    spec = dataset or registry.manifest(ref).preprocessing.get("dataset")
    if not spec:
        from strato import ConfigError

        raise ConfigError(
            f"{ref} was not trained by strato: pass --data FILE.npz (one array per input)"
        )
    return None, _dataset(str(spec), seed)


def quantize_command(
    ref: RefArg,
    mode: Annotated[
        str,
        typer.Option(
            help="auto (the recipes that fit the graph), int8-static (QDQ + QOperator), "
            "int8-dynamic (MatMul/Gemm, per-channel) or fp16."
        ),
    ] = "auto",
    data: DataOpt = None,
    targets: TargetsOpt = None,
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    dataset: DatasetOpt = None,
    seed: SeedOpt = 0,
    samples: Annotated[int, typer.Option(help="Rows the int8 calibration reader sees.")] = 256,
    max_drop: Annotated[
        float, typer.Option(help="Classification: largest accuracy drop allowed, in points.")
    ] = 1.0,
    min_agreement: Annotated[
        float, typer.Option(help="Classification: least top-1 agreement with fp32 (0-1).")
    ] = 0.97,
    min_cosine: Annotated[
        float, typer.Option(help="Embedding: least cosine to fp32 on any row.")
    ] = 0.99,
    max_relative_error: Annotated[
        float, typer.Option(help="Regression: largest mean |diff| / mean |fp32| per output.")
    ] = 0.02,
    max_abs_diff: Annotated[
        float | None,
        typer.Option(help="Generic/detection: largest |diff| (default 5 % of the output's peak)."),
    ] = None,
    max_trials: Annotated[
        int, typer.Option(help="Per-layer search: most quantize-and-gate trials.")
    ] = 24,
    search: Annotated[
        bool, typer.Option(help="Search per layer when no uniform recipe passes (auto).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Publish even when the gate fails.")] = False,
    calibrate: Annotated[
        bool, typer.Option(help="Also fit temperature + cascade threshold (classifiers).")
    ] = False,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias (e.g. prod) at the new version.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a model version; gate it by task on every output; publish the next version.

    Example: strato quantize encoder:1 --data sentences.npz --mode auto --alias prod
    """
    from strato_training.gates import GateConfig
    from strato_training.optimize import optimize_bundle, quantize_bundle

    reg = _registry(registry, s3_endpoint)
    found, ds = _data(ref, reg, data, targets, dataset, seed)
    gate = GateConfig(
        max_drop=max_drop,
        min_agreement=min_agreement,
        min_cosine=min_cosine,
        min_mean_cosine=max(min_cosine, GateConfig().min_mean_cosine),
        max_relative_error=max_relative_error,
        max_abs_diff=max_abs_diff,
    )
    options: dict[str, Any] = {
        "data": found,
        "modes": (mode,),
        "samples": samples,
        "force": force,
        "alias": alias,
    }
    with _steps(as_json) as on_step:
        if calibrate:
            _, summary = optimize_bundle(
                reg, ref, ds, calibrate=True, max_drop=max_drop, on_step=on_step, **options
            )
        else:
            _, summary = quantize_bundle(
                reg, ref, ds, gate=gate, search=search, max_trials=max_trials,
                on_step=on_step, **options,
            )  # fmt: skip
    if as_json:
        print_json(summary)
        return
    print_summary(summary)


def calibrate_command(
    ref: RefArg,
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    targets: TargetsOpt = None,
    seed: SeedOpt = 0,
    target_precision: Annotated[
        float, typer.Option(help="Precision the edge must reach on what it keeps (0-1).")
    ] = 0.99,
    as_json: JsonOpt = False,
) -> None:
    """Fit temperature scaling and the edge/cloud cascade threshold of a classifier, on the
    artifact the edge serves (its serving default).

    Example: strato calibrate digits-mlp:1 --target-precision 0.99
    """

    from strato_training.optimize import calibrate_bundle

    if not 0.0 < target_precision <= 1.0:
        raise typer.BadParameter("must be in (0, 1]", param_hint="--target-precision")
    reg = _registry(registry, s3_endpoint)
    found, ds = _data(ref, reg, data, targets, dataset, seed)
    _, summary = calibrate_bundle(reg, ref, ds, target_precision=target_precision, data=found)
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{summary['ref']} (from {summary['from']})")
    _print_calibration(summary["calibration"], full_width())


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
    s3_endpoint: S3EndpointOpt = None,
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
    reg = _registry(registry, s3_endpoint)
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
