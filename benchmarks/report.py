"""Run every benchmark and write benchmarks/results/REPORT.md: the machine, a headline table,
then each benchmark's own table and chart.

Each benchmark script writes `benchmarks/results/<name>.{md,json,png}`; a script that does not
exist yet is skipped and the report says so. A JSON result may carry
`"headline": [{"metric": ..., "value": ..., "note": ...}]` rows for the headline table; the
known benchmarks' figures are also picked out here.

Usage: python benchmarks/report.py [--quick] [--only soak,cold_start] [--no-run]
(`make bench`, `make bench BENCH_ARGS=--quick`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"
# name, what it measures; run in this order (soak last: it is the longest)
ORDER = [
    ("sdk_overhead", "SDK overhead: Client.predict vs a bare engine / HTTP call"),
    ("edge_server", "Edge throughput and dynamic batching, vs the MLServer baseline"),
    ("edge_latency", "Edge data path: batch-1 latency per client, shared memory, vs the floor"),
    ("quantization", "Quantization: size, accuracy and latency of int8 vs fp32"),
    ("cold_start", "Cold start of the Lambda handler vs ONNX Runtime and torch"),
    ("soak", "Soak: edge under load, client across edge crashes"),
]
QUICK_ARGS = {"cold_start": ["--runs", "3"]}  # for scripts without --quick
TIMEOUT_S = 45 * 60


# --- the machine -------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _gpu() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "none"
    return out.stdout.strip().replace("\n", "; ") or "none"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and runtime versions of this machine."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": cpu,
        "cores": cores,
        "ram_gib": round(mem_kib / 2**20, 1),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "onnxruntime": _package("onnxruntime"),
        "numpy": _package("numpy"),
        "gpu": _gpu(),
    }
    info["summary"] = (
        f"{info['cpu']}, {cores} cores, {info['ram_gib']} GiB RAM, Python {info['python']}, "
        f"ONNX Runtime {info['onnxruntime']}, GPU: {info['gpu']}"
    )
    return info


# --- running the benchmarks --------------------------------------------------------------------
@dataclass
class Run:
    name: str
    what: str
    status: str  # "ok", "failed (rc N)", "skipped: ...", "not run (results from an earlier run)"
    seconds: float = 0.0
    tail: str = ""


def _arguments(script: Path, name: str, quick: bool) -> list[str]:
    if not quick:
        return []
    try:
        help_text = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
        ).stdout
    except subprocess.SubprocessError:
        help_text = ""
    return ["--quick"] if "--quick" in help_text else QUICK_ARGS.get(name, [])


def run_one(name: str, what: str, *, quick: bool, execute: bool) -> Run:
    script = BENCHMARKS / f"{name}.py"
    if not script.is_file():
        return Run(name, what, f"skipped: benchmarks/{name}.py does not exist yet")
    if not execute:
        md = RESULTS / f"{name}.md"
        if not md.is_file():
            return Run(name, what, "not run, no results")
        when = datetime.fromtimestamp(md.stat().st_mtime, timezone.utc)
        return Run(name, what, f"not run this time (results of {when:%Y-%m-%d %H:%M UTC})")
    argv = [sys.executable, str(script), *_arguments(script, name, quick)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Run(name, what, f"failed (timed out after {TIMEOUT_S} s)", TIMEOUT_S)
    seconds = time.perf_counter() - started
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
    status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
    return Run(name, what, status, seconds, tail)


def run_all(quick: bool, execute: set[str]) -> list[Run]:
    """Run the benchmarks named in `execute`; the others keep their earlier results."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    runs = []
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("benchmarks", total=len(ORDER))
        for name, what in ORDER:
            progress.update(task, description=f"benchmark {name}")
            run = run_one(name, what, quick=quick, execute=name in execute)
            progress.console.print(f"{name}: {run.status} ({run.seconds:.0f} s)")
            runs.append(run)
            progress.advance(task)
    return runs


# --- the headline table ------------------------------------------------------------------------
Row = tuple[str, str, str]  # metric, value, benchmark


def _soak(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    edge, client = result.get("edge"), result.get("client")
    if edge:
        rows += [
            (
                f"edge soak, {edge['concurrency']} connections × {edge['duration_s']:.0f} s",
                f"{edge['throughput_rps']:,.0f} req/s, p99 {edge['p99_ms']:.1f} ms, "
                f"{edge['errors']} errors, RSS {edge['rss_growth'] * 100:+.1f} %",
                "soak",
            )
        ]
    if client:
        rows.append(
            (
                "client across 2 edge crashes",
                f"{client['failed']} failed of {client['calls']:,} calls "
                f"({', '.join(f'{k} {v:,}' for k, v in client['served_by'].items())})",
                "soak",
            )
        )
    return rows


def _cold_start(result: dict[str, Any]) -> list[Row]:
    cases, floor = result["cases"], result["cases"]["ort_floor"]["median_s"]
    rows: list[Row] = [
        (
            f"Lambda cold start, {name.replace('_', ' ')} (import + load + 1 predict)",
            f"{case['median_s']:.3f} s = {case['median_s'] / floor:.2f}× the bare ORT floor",
            "cold_start",
        )
        for name, case in cases.items()
        if name.startswith("handler")
    ]
    if "torch" in cases:
        rows.append(
            (
                "torch cold start (same work)",
                f"{cases['torch']['median_s'] / floor:.1f}× the ORT floor",
                "cold_start",
            )
        )
    artifact = result["artifact"]
    rows.append(
        (
            "Lambda artifact",
            f"{artifact['unzipped_mb']:.1f} MB unzipped, {artifact['zipped_mb']:.1f} MB zipped",
            "cold_start",
        )
    )
    return rows


def _quantization(result: dict[str, Any]) -> list[Row]:
    mlp = result["results"]["mlp"]
    best = min((k for k in mlp if k != "fp32"), key=lambda k: mlp[k]["b256"]["ratio_vs_fp32"])
    chosen = mlp[best]
    return [
        (
            f"int8 MLP ({best})",
            f"{chosen['size_ratio']:.2f}× size, {chosen['b256']['ratio_vs_fp32']:.2f}× batch-256 "
            f"latency, accuracy {0.0 - chosen['accuracy_drop_points']:+.2f} pt vs fp32",
            "quantization",
        )
    ]


def _sdk_overhead(result: dict[str, Any]) -> list[Row]:
    return [
        (
            f"SDK overhead, {model} batch 1",
            f"Client(Local) +{r['local_added_us']:.1f} µs over session.run "
            f"({r['local_ratio']:.2f}×); Client(Edge) {r['edge_ratio']:.2f}× a raw HTTP POST",
            "sdk_overhead",
        )
        for model, r in result["models"].items()
    ]


def _edge_server(result: dict[str, Any]) -> list[Row]:
    rows = [r for r in result["rows"] if r.get("model") == "mlp"] or result["rows"]
    top = max(r["concurrency"] for r in rows)
    return [
        (
            f"edge throughput, {r['model']} c={top}: {r['server']} ({r['body']})",
            f"{r['throughput']:,.0f} req/s, p99 {r['p99_ms']:.1f} ms",
            "edge_server",
        )
        for r in sorted(rows, key=lambda r: -r["throughput"])
        if r["concurrency"] == top
    ]


EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "sdk_overhead": _sdk_overhead,
    "edge_server": _edge_server,
    "soak": _soak,
    "cold_start": _cold_start,
    "quantization": _quantization,
}


def headline(name: str, result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for entry in result.get("headline", []) if isinstance(result, dict) else []:
        if isinstance(entry, dict) and "metric" in entry and "value" in entry:
            rows.append((str(entry["metric"]), str(entry["value"]), name))
    if not rows and name in EXTRACTORS:
        try:
            rows = EXTRACTORS[name](result)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            # the script changed its JSON: say so; its own section still shows everything
            rows = [(f"{name} (headline unreadable: {exc!r})", "see its section", name)]
    return rows


# --- the report --------------------------------------------------------------------------------
def _section(markdown: str) -> str:
    """A benchmark's own markdown, its headings two levels down (under this report's `##`)."""
    return "\n".join(
        "##" + line if line.startswith("#") else line for line in markdown.splitlines()
    )


def write_report(runs: list[Run], info: dict[str, Any], *, quick: bool) -> Path:
    rows: list[Row] = []
    sections: list[str] = []
    for run in runs:
        md, js, png = (RESULTS / f"{run.name}.{ext}" for ext in ("md", "json", "png"))
        sections += [
            f'<a id="{run.name}"></a>',
            "",
            f"## {run.what}",
            "",
            f"`benchmarks/{run.name}.py` — {run.status}"
            + (f", {run.seconds:.0f} s" if run.seconds else ""),
            "",
        ]
        if run.status.startswith("failed") and run.tail:
            sections += ["```", run.tail, "```", ""]
        if js.is_file():
            with contextlib.suppress(ValueError):
                rows += headline(run.name, json.loads(js.read_text()))
        if md.is_file() and not run.status.startswith("skipped"):
            body = _section(md.read_text())
            sections += [body, ""]
            if png.is_file() and png.name not in body:
                sections += [f"![{run.name}]({png.name})", ""]
    lines = [
        "# strato benchmark report",
        "",
        f"`make bench{' BENCH_ARGS=--quick' if quick else ''}` (`python benchmarks/report.py`), "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items() if k != "summary"),
        "",
        "Figures are from this machine only; compare ratios within one run, not across machines.",
        "",
        "## Headline",
        "",
        "| metric | value | benchmark |",
        "|---|---|---|",
        *(f"| {metric} | {value} | [{name}](#{name}) |" for metric, value, name in rows),
        "",
        "## Benchmarks",
        "",
        "| benchmark | status |",
        "|---|---|",
        *(f"| {run.name} | {run.status} |" for run in runs),
        "",
        *sections,
    ]
    path = RESULTS / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Short runs (each script's --quick).")
    parser.add_argument(
        "--only", help="Run only these (comma-separated); the others keep earlier results."
    )
    parser.add_argument("--no-run", action="store_true", help="Only rebuild REPORT.md.")
    args = parser.parse_args(argv)
    names = [name for name, _ in ORDER]
    chosen = set(args.only.split(",") if args.only else names) - (
        set(names) if args.no_run else set()
    )
    if chosen - set(names):
        parser.error(f"unknown benchmark(s) {sorted(chosen - set(names))}; known: {names}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = run_all(args.quick, chosen)
    path = write_report(runs, machine_info(), quick=args.quick)
    print(f"wrote {path.relative_to(REPO)}")
    return 1 if any(run.status.startswith("failed") for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
