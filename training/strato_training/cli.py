"""`strato train | evaluate | export | publish | quickstart`.

Commands only parse arguments and call the pipeline functions; torch and the training modules
are imported inside the command bodies so that `strato --help` stays light.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from strato.cli import JsonOpt, S3EndpointOpt, default_registry, print_json, registry_option

__all__ = ["register"]

RunDir = Annotated[
    Path, typer.Argument(help="Run folder written by `strato train --out`.", show_default=False)
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path(
        "runs/latest"
    ),
    dataset: Annotated[
        str, typer.Option(help="digits | mnist:DIR | npz:PATH | folder:DIR.")
    ] = "digits",
    model: Annotated[str, typer.Option(help="mlp | cnn | package.module:attr.")] = "mlp",
    epochs: Annotated[int, typer.Option(help="Most epochs to train.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed for the split, weights and shuffling.")] = 0,
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without a better val loss (0: off).")
    ] = 5,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA (ignored on CPU).")] = True,
    nproc: Annotated[
        int, typer.Option(help="Data-parallel processes (gloo on CPU, nccl on GPU).")
    ] = 1,
    threads: Annotated[int, typer.Option(help="torch CPU threads per process (0: default).")] = 0,
    image_size: Annotated[
        int | None, typer.Option(help="Image side in pixels (default 28; tabular data: unused).")
    ] = None,
    channels: Annotated[
        int | None, typer.Option(help="Image channels: 1 grayscale (default) or 3 RGB.")
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a model and write its run folder (model.safetensors + run.json).

    Example: strato train --dataset digits --model mlp --epochs 10 --out runs/mlp

    RGB images at 64x64 into your own module: strato train --dataset folder:photos
    --image-size 64 --channels 3 --model mypkg.nets:make_net --out runs/photos

    Data-parallel on 2 local processes: strato train --nproc 2 --out runs/ddp, or with torchrun:
    torchrun --standalone --nproc-per-node 2 "$(command -v strato)" train --out runs/ddp
    """
    from strato_training.trainer import TrainConfig, train

    config = TrainConfig(
        dataset=dataset,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        patience=patience,
        device=device,
        amp=amp,
        nproc=nproc,
        threads=threads,
        image_size=image_size,
        channels=channels,
    )
    result = train(config, out_dir=out, progress=not quiet)
    if result.rank != 0:
        return
    info = result.info() | {"run_dir": str(out)}
    if as_json:
        print_json(info)
        return
    best = result.best
    typer.echo(
        f"trained {config.model} on {config.dataset}: best epoch {result.best_epoch}/"
        f"{len(result.history)} val accuracy {best.get('val_accuracy', 0):.4f} "
        f"val loss {best.get('val_loss', 0):.4f} in {result.seconds:.1f} s "
        f"({result.world_size} process{'es' if result.world_size > 1 else ''}, {result.device})"
    )
    typer.echo(f"run folder: {out}  (next: strato evaluate {out})")


def evaluate_command(run_dir: RunDir, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Score a run's model on its test split; write report.json, confusion.png, curves.png.

    Example: strato evaluate runs/mlp --json
    """
    from strato_training.pipeline import evaluate_run

    with (
        _console().status("evaluating on the test split", spinner="dots")
        if not quiet
        else nullcontext()
    ):
        report = evaluate_run(run_dir)
    if as_json:
        print_json(report.to_dict())
        return
    from rich.table import Table

    table = Table("label", "precision", "recall", "F1", "support", title=f"{run_dir} · test split")
    for label, p, r, f, n in zip(
        report.labels, report.precision, report.recall, report.f1, report.support, strict=True
    ):
        table.add_row(label, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(n))
    from strato.cli import console

    console().print(table)  # full width when piped: rich would cut at 80 columns
    typer.echo(f"accuracy {report.accuracy:.4f}  macro F1 {report.macro_f1:.4f}")
    typer.echo(f"wrote {run_dir / 'report.json'}, confusion.png, curves.png")


def export_command(
    run_dir: RunDir,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    exporter: Annotated[
        str, typer.Option(help="auto (dynamo, legacy if it fails) | dynamo | legacy.")
    ] = "auto",
    atol: Annotated[float, typer.Option(help="Largest |torch - ONNX Runtime| allowed.")] = 1e-4,
    min_top1: Annotated[
        float, typer.Option(help="Smallest top-1 agreement torch vs ONNX Runtime.")
    ] = 0.99,
    preprocessing: Annotated[
        Path | None,
        typer.Option(help="JSON recipe baked into the graph (raw uint8 pixels in); models.md."),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a run to model.onnx (dynamic batch) and check parity with torch on the test split.

    Example: strato export runs/mlp --atol 1e-4

    Raw uint8 NHWC pixels on the wire: strato export runs/cnn --preprocessing uint8.json
    """
    from strato_training.export import ExportConfig
    from strato_training.import_config import read_preprocessing
    from strato_training.pipeline import export_run

    config = ExportConfig(opset=opset, exporter=exporter)
    recipe = read_preprocessing(preprocessing) if preprocessing else None
    with _console().status("exporting to ONNX", spinner="dots") if not quiet else nullcontext():
        exported, parity = export_run(
            run_dir, config=config, atol=atol, min_top1_agreement=min_top1, preprocessing=recipe
        )
    if as_json:
        print_json({"onnx": exported.to_dict(), "parity": parity.to_dict()})
        return
    typer.echo(
        f"exported {exported.path} ({exported.size / 1024:.1f} KiB, {exported.exporter} exporter, "
        f"opset {exported.opset})"
    )
    typer.echo(
        f"parity on {parity.samples} samples: max |diff| {parity.max_abs_diff:.3g} "
        f"(atol {parity.atol:g}), top-1 agreement {parity.top1_agreement:.4f}"
    )


def publish_command(
    run_dir: RunDir,
    name: Annotated[str, typer.Option("--name", "-n", help="Model name in the registry.")],
    version: Annotated[str | None, typer.Option(help="Version (default: the next number).")] = None,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias (e.g. prod) at the new version.")
    ] = None,
    checkpoint: Annotated[
        bool, typer.Option(help="Include model.safetensors in the bundle.")
    ] = True,
    registry: registry_option = None,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish an exported run as a verified bundle (sha256 of every file) into a registry.

    Example: strato publish runs/mlp --name digits-mlp --alias prod
    """
    from strato_training.publish import PublishConfig, publish

    config = PublishConfig(
        name=name,
        version=version,
        registry=registry,
        alias=alias,
        include_checkpoint=checkpoint,
    )
    from strato import Registry

    result = publish(run_dir, config, registry=Registry(registry, s3_endpoint=s3_endpoint))
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"published {result.ref} to {result.registry}")
    for artifact in result.manifest["artifacts"]:
        typer.echo(f"  {artifact['path']:20} {artifact['size'] / 1024:9.1f} KiB")


def quickstart_command(
    registry: registry_option = None,
    workdir: Annotated[Path, typer.Option(help="Where the run folder goes.")] = Path(
        ".strato/quickstart"
    ),
    name: Annotated[str, typer.Option(help="Model name to publish.")] = "digits-mlp",
    epochs: Annotated[int, typer.Option(help="Most epochs to train.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed for the split and the weights.")] = 0,
    optimize: Annotated[
        bool, typer.Option(help="Calibrate and quantize (int8 static) before serving.")
    ] = True,
    serve: Annotated[
        bool,
        typer.Option(
            help="Serve on the edge daemon and the Lambda emulator and route the test split."
        ),
    ] = True,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the reference MLP on digits, evaluate, export, check parity, publish, calibrate and
    quantize, serve on the edge daemon and the Lambda emulator, route the test split through
    strato.Client with the confidence cascade. `make demo` runs this.

    Example: strato quickstart --registry .strato/registry --json
    """
    from strato import Registry

    from strato_training.pipeline import QuickstartConfig, run_quickstart
    from strato_training.trainer import TrainConfig

    config = QuickstartConfig(
        workdir=workdir,
        name=name,
        train=TrainConfig(epochs=epochs, seed=seed, threads=1),
        progress=not quiet,
        optimize=optimize,
        serve=serve,
    )
    console = _console()

    def on_step(step: str, description: str, seconds: float) -> None:
        if not quiet:
            console.print(f"[green]✓[/green] {step:9} {description} [dim]{seconds:.2f} s")

    root = default_registry(registry)
    if "://" not in root:  # the optimize step runs ONNX Runtime tools from a scratch folder
        root = str(Path(root).resolve())
    summary = run_quickstart(config, Registry(root), on_step=on_step).to_dict()
    if as_json:
        print_json(summary)
        return
    from strato.cli import console as full_width

    out = full_width()  # rich falls back to 80 columns off a terminal; piped tables keep all
    _print_summary(summary, out)
    if "optimize" in summary:
        from strato_training.cli_optimize import print_summary

        print_summary(summary["optimize"], out)
    if "routing" in summary:
        _print_routing(summary["routing"], out)


def _print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table("", "", title=f"strato quickstart · {summary['model']}", show_header=False)
    table.add_row("test accuracy", f"{summary['accuracy']:.4f}")
    table.add_row("macro F1", f"{summary['macro_f1']:.4f}")
    table.add_row("model size", f"{summary['model_size_bytes'] / 1024:.1f} KiB (model.onnx, fp32)")
    table.add_row(
        "p50 latency", f"{summary['p50_latency_ms']:.3f} ms (batch 1, strato.Client → Local)"
    )
    parity = summary["parity"]
    table.add_row(
        "parity", f"max |diff| {parity['max_abs_diff']:.2g}, top-1 {parity['top1_agreement']:.4f}"
    )
    table.add_row("served by", str(summary["served"]["served_by"]))
    table.add_row("registry", summary["registry"])
    for path, location in summary["artifacts"].items():
        table.add_row(path, location)
    table.add_row("total time", f"{summary['total_seconds']:.1f} s")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the training commands to the root `strato` app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("export")(export_command)
    app.command("publish")(publish_command)
    app.command("quickstart")(quickstart_command)
    from strato_training.cli_import import import_command

    app.command("import")(import_command)


def _print_routing(routing: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    threshold = routing.get("threshold")
    title = (
        f"routing {routing['samples']} test samples · Client(Edge, Lambda, Cascade"
        f"{f' p<{threshold:.3f}' if threshold is not None else ''})"
    )
    table = Table("tier", "calls", "share", "accuracy", "p50 ms", "p99 ms", title=title)
    for tier, label in (("edge", "answered on the edge"), ("cloud", "escalated to the cloud")):
        row = routing[tier]
        accuracy = f"{row['accuracy'] * 100:.2f} %" if row["accuracy"] is not None else "-"
        table.add_row(
            label,
            str(row["calls"]),
            f"{row['share'] * 100:.1f} %",
            accuracy,
            f"{row['p50_ms']}" if row["p50_ms"] is not None else "-",
            f"{row['p99_ms']}" if row["p99_ms"] is not None else "-",
        )
    table.add_row(
        "cascade",
        str(routing["samples"]),
        "100 %",
        f"{routing['cascade_accuracy'] * 100:.2f} %",
        "",
        "",
    )
    table.add_row(
        "edge model alone",
        str(routing["samples"]),
        "",
        f"{routing['edge_alone_accuracy'] * 100:.2f} %",
        "",
        "",
    )
    console.print(table)
    expected = routing.get("expected_edge_share")
    if expected is not None:
        console.print(
            f"edge share {routing['edge']['share'] * 100:.1f} % "
            f"(calibration on validation predicted {expected * 100:.1f} %)"
        )
