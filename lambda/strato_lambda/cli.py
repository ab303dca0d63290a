"""`strato cloud …`: the local Lambda emulator, SageMaker packaging and SAM deploy parameters.

Nothing heavy is imported until a command runs (`strato --help` stays light).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from strato.cli import JsonOpt, RegistryOpt, S3EndpointOpt, fail
from strato.cli import print_json as _print_json

app = typer.Typer(
    help="The cloud tier: run the Lambda function locally, package for SageMaker, deploy with SAM.",
    no_args_is_help=True,
)


def _serve_until_stopped(emulator: Any) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    emulator.start()
    try:
        stop.wait()
    finally:
        emulator.stop()


@app.command("local")
def local(
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME@ALIAS, NAME:VERSION or NAME in --registry.", show_default=False),
    ] = None,
    registry: RegistryOpt = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            envvar="STRATO_MODEL_URI",
            help="Instead of REF: s3://bucket/prefix/NAME@ALIAS | …/NAME/VERSION, a bundle "
            "folder, or REGISTRY_DIR/NAME@ALIAS (what the deployed function reads).",
        ),
    ] = None,
    function_name: Annotated[
        str, typer.Option(help="Function name boto3 invokes.")
    ] = "strato-infer",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Lambda Invoke API port (0: any free port).")] = 3001,
    api_port: Annotated[
        int | None, typer.Option(help="HTTP API port; default: the same port as --port.")
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            help="S3 endpoint for s3:// models (moto, MinIO); default: STRATO_S3_ENDPOINT."
        ),
    ] = None,
    memory: Annotated[int, typer.Option(help="Memory size the context reports, MB.")] = 1024,
    quiet: Annotated[
        bool, typer.Option(help="Only warnings from the function: no INFO logs, no EMF metrics.")
    ] = False,
) -> None:
    """Serve the Lambda function on 127.0.0.1 like `sam local start-lambda` + `start-api`.

    Example: strato cloud local digits-mlp@prod --registry .strato/registry --port 3001
    """
    model_uri = _model_uri(ref, registry, model_uri)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    if quiet:  # read when Powertools' Logger is built, i.e. on the import below
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    from strato_lambda import app as function
    from strato_lambda.emulator import Emulator
    from strato_lambda.settings import Settings

    service = function.configure(Settings.resolve(model_uri=model_uri, s3_endpoint=s3_endpoint))
    if not service.try_load():
        typer.secho(f"error: {service.error}", fg="red", err=True)
        raise typer.Exit(1)
    model = service.load()
    try:
        emulator = Emulator(
            function.handler,
            function_name=function_name,
            host=host,
            port=port,
            api_port=api_port,
            memory_mb=memory,
        )
    except OSError as exc:
        busy = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise fail(
            f"cannot listen on {host}:{port}"
            + (f" or {api_port}" if api_port is not None else "")
            + f": {busy} (another `strato cloud local`? pick another --port)",
            1,
        ) from None
    typer.echo(
        f"strato cloud local ready: lambda={emulator.lambda_url} api={emulator.api_url} "
        f"function={function_name} model={model.name}:{model.version} "
        f"precision={model.engine.precision} load_ms={model.load_seconds * 1000:.0f}"
    )
    sys.stdout.flush()  # tests and the demo wait for the ready line
    if quiet:  # EMF metrics are print()ed; the Logger keeps its own handle on the real stdout
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    _serve_until_stopped(emulator)


def _model_uri(ref: str | None, registry: str | None, model_uri: str | None) -> str:
    """`REF --registry R` as the model URI the function reads (`R/NAME@ALIAS`, `R/NAME/V`)."""
    if model_uri and ref:
        raise fail("give a model REF or --model-uri, not both", 2)
    if model_uri:
        return model_uri
    if not ref:
        raise fail("name the model: strato cloud local NAME@ALIAS [--registry DIR|s3://…]", 2)
    from strato import ModelRef
    from strato.cli import default_registry

    parsed = ModelRef.parse(ref)
    root = default_registry(registry).rstrip("/")
    if parsed.version:
        return f"{root}/{parsed.name}/{parsed.version}"
    return f"{root}/{parsed.name}@{parsed.alias or 'prod'}"


def _use_s3_endpoint(endpoint: str | None) -> None:
    # S3 registries build their boto3 client from STRATO_S3_ENDPOINT when they first need it.
    if endpoint:
        os.environ["STRATO_S3_ENDPOINT"] = endpoint


@app.command("package")
def package(
    source: Annotated[
        str, typer.Argument(help="A bundle folder, or NAME / NAME:VERSION / NAME@ALIAS.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Archive to write.")] = Path(
        "model.tar.gz"
    ),
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the SageMaker `model.tar.gz` for a bundle (extracted to /opt/ml/model).

    Example: strato cloud package digits-mlp@prod --output model.tar.gz
    """
    from rich.progress import Progress

    from strato_lambda.packaging import open_bundle, sagemaker_archive

    _use_s3_endpoint(s3_endpoint)
    bundle = open_bundle(source, registry)
    with Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task(f"packing {bundle.ref}", total=1)  # the served artifact
        digest = sagemaker_archive(bundle, output, progress=lambda _: progress.advance(task))
    size = output.stat().st_size
    info: dict[str, Any] = {
        "model": bundle.ref,
        "path": str(output),
        "bytes": size,
        "sha256": digest,
    }
    if as_json:
        _print_json(info)
        return
    typer.echo(f"{output}  {bundle.ref}  {size / 1024:.1f} KiB  sha256 {digest[:16]}")


@app.command("params")
def params(
    ref: Annotated[
        str, typer.Argument(help="NAME, NAME:VERSION (pinned) or NAME@ALIAS (followed).")
    ],
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    prefix: Annotated[
        str, typer.Option(help="Where the registry lives in the stack's model bucket.")
    ] = "registry",
    stage: Annotated[str | None, typer.Option(help="Stage parameter (dev, prod…).")] = None,
    memory: Annotated[int | None, typer.Option(help="Lambda MemorySize in MB.")] = None,
    architecture: Annotated[str | None, typer.Option(help="arm64 or x86_64.")] = None,
    sagemaker_image: Annotated[
        str | None,
        typer.Option(help="ECR image URI: also deploy the SageMaker Serverless endpoint."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print `sam deploy --parameter-overrides …` serving a registry model, and its uploads.

    Example: strato cloud params digits-mlp@prod --stage prod
    """
    from strato_lambda.packaging import sam_parameters

    _use_s3_endpoint(s3_endpoint)
    result = sam_parameters(
        ref,
        registry=registry,
        prefix=prefix,
        stage=stage,
        memory=memory,
        architecture=architecture,
        sagemaker_image=sagemaker_image,
    )
    if as_json:
        _print_json(
            {
                "parameter_overrides": result.overrides,
                "command": result.command,
                "uploads": result.uploads,
            }
        )
        return
    typer.echo("# upload the model to the stack's bucket (output ModelBucketName):")
    for line in result.uploads:
        typer.echo(line)
    typer.echo(result.command)
