"""`strato edge models | predict | bench`: the commands that talk to a running server."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strato_edge.cli_options import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    echo_json,
    fail,
    run_with_bar,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the client commands to the `strato edge` app."""
    app.command()(models)
    app.command()(predict)
    app.command()(bench)


@contextlib.contextmanager
def _http(url: str, token: str | None) -> Iterator[Any]:
    """An httpx client for `url`; a server that is not there is a one-line error, exit 1."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise fail(f"--url must start with http:// or https://, got {url!r}", 2)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http:
            yield http
    except httpx.ConnectError as exc:
        raise fail(
            f"cannot connect to the edge server at {url} ({_reason(exc)}); "
            "is `strato edge serve` running there?",
            1,
        ) from None
    except httpx.TimeoutException:
        raise fail(f"the edge server at {url} did not answer within 30 s", 1) from None
    except httpx.HTTPError as exc:
        raise fail(f"talking to the edge server at {url} failed: {exc}", 1) from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(exc).__name__


def _checked(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise fail(f"{response.request.url}: HTTP {response.status_code}: {message}", 1)
    return response


def _load_input(path: Path) -> Any:
    """One array from a .npy, or every array of a .npz by name."""
    import numpy as np

    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic[:4] == b"PK\x03\x04":  # .npz is a zip archive
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError) as exc:
            raise fail(f"--input {path}: cannot read it as .npz ({exc})", 2) from None
    if magic != b"\x93NUMPY":
        raise fail(f"--input {path} is not a .npy file (numpy.save) or .npz (numpy.savez)", 2)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise fail(f"--input {path}: cannot read it as .npy ({exc})", 2) from None


def _named(given: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The file's arrays by input name; never an input filled at random."""
    names = [spec["name"] for spec in meta["inputs"]]
    if not isinstance(given, dict):
        if len(names) != 1:
            raise fail(f"the model takes {len(names)} inputs {names}: pass an .npz by name", 2)
        return {names[0]: given}
    if len(given) == 1 and len(names) == 1:
        return {names[0]: next(iter(given.values()))}
    missing = [n for n in names if n not in given]
    unknown = sorted(n for n in given if n not in names)
    if missing or unknown:
        raise fail(
            f"--input holds {sorted(given)} but the model takes {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (not inputs: {unknown})" if unknown else ""),
            2,
        )
    return {n: given[n] for n in names}


def models(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List the models a running server serves, with signature and precision.

    Example: strato edge models --url http://127.0.0.1:8000
    """
    with _http(url, token) as http:
        index = _checked(http.post("/v2/repository/index")).json()
        rows = [_checked(http.get(f"/v2/models/{m['name']}")).json() for m in index]
    if as_json:
        echo_json(rows)
        return
    for meta in rows:
        params = meta.get("parameters", {})
        sig = ", ".join(f"{t['name']} {t['datatype']}{t['shape']}" for t in meta["inputs"])
        typer.echo(
            f"{meta['name']}:{params.get('version')}  {params.get('precision')} on "
            f"{params.get('engine')}  inputs: {sig}  versions: {', '.join(meta['versions'])}"
        )


def predict(
    model: Annotated[str, typer.Argument(help="Model name (NAME or NAME:VERSION).")],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help=".npz with one array per input (by name), or .npy for a one-input model. "
            "Required unless --random.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    random: Annotated[
        bool,
        typer.Option(
            "--random", help="Send one row of random data shaped like the inputs (a smoke test)."
        ),
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    binary: Annotated[bool, typer.Option("--binary/--json-body", help="Body format.")] = True,
    top: Annotated[int, typer.Option(help="Labels to show per row.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Send one inference request to a running server: the rows of --input, or random data
    only when --random asks for it (an input is never filled at random otherwise).

    Example: strato edge predict digits-mlp --input digits.npy --url http://127.0.0.1:8000

    Example: strato edge predict digits-mlp --random   # a smoke test with random data
    """
    from strato.wire import HEADER_LENGTH, decode_response, encode_request

    from strato_edge.bench import random_inputs

    if (input_file is None) == (not random):
        raise fail("pass --input FILE (your rows) or --random (random data), exactly one", 2)
    name, _, version = model.partition(":")
    base = f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
    given = _load_input(input_file) if input_file is not None else None
    with _http(url, token) as http:
        meta = _checked(http.get(base)).json()
        inputs = random_inputs(meta) if given is None else _named(given, meta)
        body, length = encode_request(inputs, binary=binary, binary_outputs=binary)
        headers = {HEADER_LENGTH: str(length)} if length is not None else {}
        response = _checked(http.post(f"{base}/infer", content=body, headers=headers))
    raw_length = response.headers.get(HEADER_LENGTH)
    decoded = decode_response(
        response.content, header_length=int(raw_length) if raw_length else None
    )
    _print_prediction(decoded, meta, response.headers, top=top, as_json=as_json)


def _print_prediction(
    decoded: Any, meta: dict[str, Any], headers: Any, *, top: int, as_json: bool
) -> None:
    import numpy as np

    if meta.get("parameters", {}).get("task", "classification") != "classification":
        _print_values(decoded, as_json)
        return
    labels = meta.get("parameters", {}).get("labels") or []
    first = next(iter(decoded.outputs.values()))
    rows = []
    for row in first.reshape(first.shape[0], -1):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:top]
        rows.append(
            [
                {
                    "label": labels[i] if i < len(labels) else str(i),
                    "confidence": round(float(probs[i]), 4),
                }
                for i in order
            ]
        )
    if as_json:
        echo_json(
            {
                "model": f"{decoded.model_name}:{decoded.model_version}",
                "precision": headers.get("x-strato-precision"),
                "outputs": {k: v.tolist() for k, v in decoded.outputs.items()},
                "top": rows,
            }
        )
        return
    for i, row in enumerate(rows):
        typer.echo(f"[{i}] " + "  ".join(f"{r['label']}:{r['confidence']:.3f}" for r in row))
    typer.echo(
        f"# {decoded.model_name}:{decoded.model_version} "
        f"precision={headers.get('x-strato-precision')}",
        err=True,
    )


def _print_values(decoded: Any, as_json: bool) -> None:
    """Outputs of a model that is not a classifier: the values, not a softmax."""
    import numpy as np

    if as_json:
        outputs = {k: v.tolist() for k, v in decoded.outputs.items()}
        echo_json({"model": f"{decoded.model_name}:{decoded.model_version}", "outputs": outputs})
        return
    with np.printoptions(precision=6, suppress=True, threshold=200):
        for name, value in decoded.outputs.items():
            typer.echo(f"{name} {value.dtype} {list(value.shape)}\n{value}")


def bench(
    model: Annotated[str, typer.Argument(help="Model name (NAME or NAME:VERSION).")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Concurrent clients.")
    ] = 8,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds of load.")] = 10.0,
    binary: Annotated[bool, typer.Option("--binary/--json-body", help="Body format.")] = True,
    batch: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    processes: Annotated[int, typer.Option(help="Load-generator processes.")] = 1,
    warmup: Annotated[float, typer.Option(help="Seconds of unmeasured load first.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Drive a running server with N concurrent clients for T seconds; print req/s and p50/p95/p99.

    Example: strato edge bench digits-mlp -c 32 -d 10 --url http://127.0.0.1:8000
    """
    from strato_edge.bench import random_inputs, run_bench

    name, _, version = model.partition(":")
    base = f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
    with _http(url, token) as http:
        meta = _checked(http.get(base)).json()
    answered = multiprocessing.get_context("spawn").RawValue("Q", 0)
    result = run_with_bar(
        lambda: run_bench(
            url,
            f"{base}/infer",
            random_inputs(meta, batch),
            model=model,
            concurrency=concurrency,
            duration_s=duration,
            binary=binary,
            token=token,
            processes=processes,
            warmup_s=warmup,
            answered=answered,
        ),
        _bench_poll(answered, f"{model} c={concurrency}", warmup, duration),
        *_bench_columns(),
        answers=0,
        rate="",
    )
    if as_json:
        echo_json(result.to_dict())
        return
    typer.echo(
        f"{result.model} c={concurrency} {result.body}: {result.throughput:,.0f} req/s  "
        f"p50 {result.p50_ms:.2f} ms  p95 {result.p95_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
        f"errors {result.errors}"
    )


def _bench_columns() -> tuple[Any, ...]:
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[answers]:>9,} answers  {task.fields[rate]:>12}"),
        TimeRemainingColumn(),
    )


def _bench_poll(answered: Any, label: str, warmup: float, duration: float) -> Any:
    """Time-based progress with the live rate of measured answers (warm-up first)."""
    started = time.monotonic()

    def poll(bar: Any, task: Any) -> None:
        elapsed = time.monotonic() - started
        measuring = elapsed - warmup
        rate = f"{answered.value / measuring:,.0f} req/s" if measuring > 0.2 else "warming up"
        bar.update(
            task,
            description=label,
            total=warmup + duration,
            completed=min(elapsed, warmup + duration),
            answers=answered.value,
            rate=rate,
        )

    return poll
