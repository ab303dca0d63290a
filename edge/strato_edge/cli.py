"""`strato edge …`: serve, pull, rollback, status, models, predict, bench, fingerprint,
install-service, greengrass-component."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from strato.cli import S3EndpointOpt

from strato_edge.cli_fleet import register as register_fleet
from strato_edge.cli_options import (
    JsonOpt,
    StoreOpt,
    TokenOpt,
    echo_json,
    fail,
    run_with_bar,
    store_path,
)
from strato_edge.cli_remote import register
from strato_edge.config import DEFAULT_STORE, SAGEMAKER_MODEL_DIR

__all__ = ["app"]

app = typer.Typer(
    help="The device daemon: serve models over the Open Inference Protocol, sync them from a "
    "registry, benchmark a running server.",
    no_args_is_help=True,
)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


@app.command()
def serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; non-loopback needs --token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int | None,
        typer.Option(
            help="Port (0 picks a free one).",
            show_default="8000; with --sagemaker $SAGEMAKER_BIND_TO_PORT, else 8080",
        ),
    ] = None,
    token: TokenOpt = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the bearer token from this file (keeps it off the command line).",
            envvar="STRATO_EDGE_TOKEN_FILE",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback bind without a token.")
    ] = False,
    sagemaker: Annotated[
        bool, typer.Option(help="SageMaker hosting: port 8080, /ping, /invocations, /opt/ml/model.")
    ] = False,
    max_batch_size: Annotated[int, typer.Option(help="Rows per engine run; 1 = no batching.")] = 32,
    max_queue_delay_us: Annotated[
        int, typer.Option(help="How long a batch waits for more requests while the model is busy.")
    ] = 500,
    inline_below_us: Annotated[
        int,
        typer.Option(
            help="Engines whose runs average under this run on the event loop; 0 = never."
        ),
    ] = 150,
    batching: Annotated[
        Path | None,
        typer.Option(help='Per-model batching, JSON or TOML: {"default": {...}, "models": {...}}.'),
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Larger bodies get 413.")] = 8 << 20,
    timeout: Annotated[
        float, typer.Option(help="Per-request deadline in seconds (then 504).")
    ] = 30.0,
    watch_interval: Annotated[
        float, typer.Option(help="Seconds between store checks for hot swaps; 0 = never.")
    ] = 1.0,
    workers: Annotated[
        int,
        typer.Option(
            "--inference-threads",
            "--workers",
            help="Threads that run engines (the pool batches are handed to).",
        ),
    ] = 4,
    max_loaded_versions: Annotated[
        int, typer.Option(help="Unserved versions kept loaded on request (least recent go).")
    ] = 2,
    max_connections: Annotated[
        int, typer.Option(help="Open connections; past it the oldest idle one is dropped.")
    ] = 1024,
    threads: Annotated[
        int | None,
        typer.Option(help="ONNX Runtime intra-op threads per model (default: all cores)."),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve KServe v2 gRPC on this port (0: any free one); off unless set."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Also serve GET /metrics without the token on this port."),
    ] = None,
    uds: Annotated[
        Path | None, typer.Option(help="Also listen on this Unix domain socket (Edge('unix://…')).")
    ] = None,
    allow_shm: Annotated[
        bool, typer.Option(help="Offer Triton's system shared memory to clients on this machine.")
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", callback=_log_level)
    ] = "info",
) -> None:
    """Serve every model in the store over the Open Inference Protocol v2.

    Example: strato edge serve --store .strato/registry --port 8000
    """
    from strato_edge.config import BatchingConfig, ServeConfig, load_batching
    from strato_edge.daemon import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    base = BatchingConfig(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        inline_below_us=inline_below_us,
    )
    per_model: dict[str, BatchingConfig] = {}
    if batching is not None:
        base, per_model = load_batching(batching, base)
    root = store or Path(SAGEMAKER_MODEL_DIR if sagemaker else DEFAULT_STORE)
    if not root.is_dir():
        raise fail(f"store {root} does not exist (pull a model first: strato edge pull …)")
    config = ServeConfig(
        store=root,
        host=host,
        port=port if port is not None else _default_port(sagemaker),
        token=_token(token, token_file),
        insecure=insecure,
        sagemaker=sagemaker,
        batching=base,
        model_batching=per_model,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout,
        watch_interval_s=watch_interval,
        threads=threads,
        workers=workers,
        max_loaded_versions=max_loaded_versions,
        max_connections=max_connections,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        uds=str(uds) if uds is not None else None,
        allow_shm=allow_shm,
    )
    if grpc_port is not None:
        _check_grpc_extra()
    run_server(config, log_level=log_level.lower())


def _token(token: str | None, token_file: Path | None) -> str | None:
    from strato_edge.config import read_token_file

    if token and token_file is not None:
        raise fail("give the token once: --token or --token-file, not both")
    if token_file is not None:
        return read_token_file(token_file)
    return token or None


def _default_port(sagemaker: bool) -> int:
    """8000; in SageMaker mode the port SageMaker asks for (`SAGEMAKER_BIND_TO_PORT`, set on
    multi-container endpoints), else its standard 8080."""
    if not sagemaker:
        return 8000
    raw = os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")
    if not raw.isdigit():
        raise fail(f"SAGEMAKER_BIND_TO_PORT must be a port number, got {raw!r}")
    return int(raw)


def _check_grpc_extra() -> None:
    try:
        import grpc  # noqa: F401
        import tritonclient.grpc.service_pb2_grpc  # noqa: F401
    except ImportError as exc:
        raise fail(
            f"--grpc-port needs the grpc extra (pip install 'strato[edge,grpc]'): {exc}", 1
        ) from None


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            "-r",
            help="Source registry: a folder or s3://bucket/prefix.",
            ),
    ] = None,
    store: StoreOpt = None,
    keep: Annotated[int, typer.Option(help="Installed versions to keep.")] = 3,
    watch: Annotated[bool, typer.Option(help="Keep following the reference.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between checks with --watch.")] = 10.0,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install a verified bundle into the device store and serve it (alias `current`).

    Example: strato edge pull digits-mlp@prod --registry s3://models/strato --store /var/lib/strato
    """
    from strato.cli import default_registry

    from strato_edge.sync import open_source
    from strato_edge.sync import watch as do_watch

    source = open_source(default_registry(registry), s3_endpoint=s3_endpoint)
    target = store_path(store)

    def report(result: Any) -> None:
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
            return
        verb = "downloaded" if result.downloaded else "already installed"
        typer.echo(
            f"{result.name}:{result.version} {verb}; current → {result.version}"
            + (f" (was {result.previous})" if result.changed and result.previous else "")
        )
        if result.removed:
            typer.echo(f"  removed old version(s): {', '.join(result.removed)}")

    if not watch:
        report(_pull_with_bar(ref, source, target, keep, quiet=as_json))
        return
    typer.echo(f"watching {ref} in {source.url} every {interval:g}s (Ctrl-C to stop)", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        do_watch(
            ref,
            source=source,
            store=target,
            interval_s=interval,
            keep=keep,
            on_pull=report,
            on_error=lambda exc: typer.secho(f"pull refused: {exc}", fg="yellow", err=True),
        )


def _pull_with_bar(ref: str, source: Any, target: Path, keep: int, *, quiet: bool) -> Any:
    """`sync.pull` under a bar with sizes and rate: the bytes are counted in the download's
    staging folder beside the version folder (`.<version>.pull-*`), against the manifest's sizes."""
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn

    from strato_edge.sync import pull as do_pull

    def work() -> Any:
        return do_pull(ref, source=source, store=target, keep=keep)

    if quiet:
        return work()
    resolved = source.resolve(ref)
    name, version = resolved.name, str(resolved.version)
    total = sum(a.size for a in source.manifest(resolved).artifacts)

    def poll(bar: Any, task: Any) -> None:
        staged = sum(
            f.stat().st_size
            for folder in (target / name).glob(f".{version}.pull-*")
            for f in folder.rglob("*")
            if f.is_file()
        )
        done = (target / name / version / "manifest.json").is_file()
        bar.update(task, total=total, completed=total if done else min(staged, total))

    columns = (
        TextColumn(f"pulling {name}:{version}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    return run_with_bar(work, poll, *columns)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    store: StoreOpt = None,
    to: Annotated[
        str | None, typer.Option(help="An installed version to serve (default: the previous).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the version the device served before (moves alias `current` back).

    The operator's explicit act: a device otherwise refuses a version below the highest it served.

    Example: strato edge rollback digits-mlp --store /var/lib/strato
    """
    from strato_edge.sync import rollback as do_rollback

    version = do_rollback(store_path(store), name, to=to)
    if as_json:
        echo_json({"model": name, "current": version})
    else:
        typer.echo(f"{name}: current → {version}")


@app.command()
def status(
    store: StoreOpt = None,
    url: Annotated[
        str | None, typer.Option("--url", "-u", help="Also ask this running server.")
    ] = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what the device store holds and which version each model serves.

    Example: strato edge status --store .strato/registry --url http://127.0.0.1:8000
    """
    from strato_edge.sync import store_status

    root = store_path(store)
    if not root.is_dir():
        raise fail(f"store {root} does not exist (pull a model first: strato edge pull …)")
    report: dict[str, Any] = {"store": str(root), "models": store_status(root)}
    if url:
        report["server"] = _server_status(url, token)
    if as_json:
        echo_json(report)
        return
    from rich.table import Table
    from strato.cli import console

    table = Table("model", "serving", "versions", "aliases", title=f"store {root}")
    for row in report["models"]:
        aliases = ", ".join(f"{a}→{v}" for a, v in row["aliases"].items()) or "-"
        table.add_row(row["model"], str(row["serving"]), ", ".join(row["versions"]), aliases)
    console().print(table)
    if url:
        typer.echo(f"server {url}: {json.dumps(report['server'])}")


def _server_status(url: str, token: str | None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=5.0) as http:
            ready = http.get("/v2/health/ready").status_code == 200
            index = http.post("/v2/repository/index")
            models = index.json() if index.status_code == 200 else index.json().get("error")
    except httpx.HTTPError as exc:
        return {"reachable": False, "error": str(exc)}
    return {"reachable": True, "ready": ready, "models": models}


register(app)  # models, predict, bench
register_fleet(app)  # install-service, greengrass-component


@app.command()
def fingerprint(as_json: JsonOpt = False) -> None:
    """Describe this device: OS, CPU, GPU, CUDA, TensorRT, ONNX Runtime providers.

    Example: strato edge fingerprint --json
    """
    try:
        from strato.device import fingerprint as device_fingerprint
        from strato.device import format_fingerprint
    except ImportError as exc:
        raise fail(f"device fingerprinting is not available in this install: {exc}") from None
    found = device_fingerprint()
    if as_json:
        echo_json(found)
    else:
        typer.echo(format_fingerprint(found))
