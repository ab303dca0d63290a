"""Cold start of the Lambda artifact vs the bare ONNX Runtime floor vs torch, and artifact sizes.

Not a test. Every run is a fresh interpreter:

- handler: only the built artifact + stdlib + the runtime's boto3 on sys.path (`python -S -E -s`),
  import `strato_lambda.app` (which loads the model at init), answer one HTTP API v2 event
  (`handler_http`) or one direct-invoke envelope (`handler_direct`), handed a context object the
  script defines (Lambda's runtime builds its own; no emulator import is timed);
- ort floor: the same interpreter and artifact, import numpy + onnxruntime, load the ONNX, run once;
- torch: the project venv, import torch, load the state dict (weights_only), forward once.

- before (with `--before REF`): the same two handler cases for the artifact built from git ref REF,
  interleaved in the same run, so a change is measured against its baseline on the same machine.

Usage: python benchmarks/cold_start.py [--runs 7 | --quick] [--artifact DIR] [--before REF]
Writes benchmarks/results/cold_start.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six.py")
MB = 1_000_000

HANDLER = """
import time; started = time.perf_counter()
import json, sys
import strato_lambda.app as app
class Context:  # what Lambda's runtime hands the handler (built by the runtime, not the function)
    function_name, function_version, memory_limit_in_mb = "strato-infer", "$LATEST", 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:strato-infer"
    aws_request_id, log_group_name, log_stream_name = "cold-1", "/aws/lambda/strato-infer", "s"
    def get_remaining_time_in_millis(self): return 30000
answer = app.handler(json.loads(open(sys.argv[1]).read()), Context())
assert answer.get("statusCode", answer.get("status")) == 200, answer
print(json.dumps({"seconds": time.perf_counter() - started}))
"""
ORT_FLOOR = """
import time; started = time.perf_counter()
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
session.run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})
print(json.dumps({"seconds": time.perf_counter() - started}))
"""
TORCH = """
import time; started = time.perf_counter()
import json, sys
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
with torch.inference_mode():
    model(torch.zeros(1, 1, 28, 28))
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def build_artifact(target: Path, repo: Path = REPO) -> Path:
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(repo / "lambda"),
            "build-StratoFunction",
            f"ARCH={arch}",
            f"PYTHON_VERSION={version}",
            f"PYTHON={sys.executable}",
            f"ARTIFACTS_DIR={target}",
        ],
        check=True,
    )
    return target


def build_before(ref: str, workdir: Path) -> Path:
    """The artifact of git ref `ref` (its own Makefile and code), built beside this run's."""
    source = workdir / "before-src"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    return build_artifact(workdir / "before-artifact", source)


def make_model(workdir: Path) -> tuple[Path, Path]:
    """The reference MLP (784-128-10): a bundle with its ONNX, and its torch state dict."""
    import torch
    from strato import TensorSpec
    from strato._bundle import make_bundle

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    ).eval()
    bundle = workdir / "bundle"
    bundle.mkdir()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(bundle / "model.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    torch.save(model.state_dict(), workdir / "weights.pt")
    make_bundle(
        bundle,
        name="digits-mlp",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(str(i) for i in range(10)),
    )
    return bundle, workdir / "weights.pt"


def runtime_site(workdir: Path) -> Path:
    import boto3

    site = Path(boto3.__file__).parents[1]
    runtime = workdir / "var-runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return runtime


def fresh(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds inside the process, wall seconds including interpreter start) of one run."""
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    wall = time.perf_counter() - started
    return float(json.loads(out.strip().splitlines()[-1])["seconds"]), wall


def clean_python(artifact: Path, runtime: Path, code: str) -> list[str]:
    prelude = f"import sys; sys.path[:0] = [{str(artifact)!r}]; sys.path.append({str(runtime)!r})\n"
    return [sys.executable, "-S", "-E", "-s", "-c", prelude + code]


def sizes(artifact: Path, workdir: Path) -> dict[str, float]:
    unzipped = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())
    archive = workdir / "function.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as bundle:
        for path in sorted(artifact.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(artifact).as_posix())
    return {"unzipped_mb": unzipped / MB, "zipped_mb": archive.stat().st_size / MB}


def measure(runs: int, artifact: Path, workdir: Path, before: Path | None = None) -> dict[str, Any]:
    from strato._envelope import pack

    bundle, weights = make_model(workdir)
    runtime = runtime_site(workdir)
    event = json.loads((REPO / "tests" / "lambda" / "events" / "http_infer_json.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v2/models/digits-mlp/infer"
    event_path = workdir / "event.json"
    event_path.write_text(json.dumps(event))
    envelope_path = workdir / "envelope.json"  # the SDK's direct invoke: no HTTP resolver loaded
    envelope_path.write_text(json.dumps(pack(event["body"].encode(), None, model="digits-mlp")))
    handler_env = {
        "STRATO_MODEL_URI": str(bundle),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "strato-infer",
        "STRATO_CACHE_DIR": str(workdir),
    }
    cases = {
        "handler_http": ([*clean_python(artifact, runtime, HANDLER), str(event_path)], handler_env),
        "handler_direct": (
            [*clean_python(artifact, runtime, HANDLER), str(envelope_path)],
            handler_env,
        ),
        "ort_floor": (
            [*clean_python(artifact, runtime, ORT_FLOOR), str(bundle / "model.onnx")],
            {},
        ),
        "torch": ([sys.executable, "-c", TORCH, str(weights)], {}),
    }
    if before is not None:
        cases["before_handler_http"] = (
            [*clean_python(before, runtime, HANDLER), str(event_path)],
            handler_env,
        )
        cases["before_handler_direct"] = (
            [*clean_python(before, runtime, HANDLER), str(envelope_path)],
            handler_env,
        )
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so drift on a shared machine hits every case alike
        for name, (argv, env) in cases.items():
            samples[name].append(fresh(argv, {"PATH": "/usr/bin:/bin", **env}))
    result: dict[str, Any] = {
        "runs": runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cases": {},
    }
    for name, values in samples.items():
        inside = [v[0] for v in values]
        result["cases"][name] = {
            "median_s": statistics.median(inside),
            "min_s": min(inside),
            "max_s": max(inside),
            "median_wall_s": statistics.median(v[1] for v in values),
        }
    floor = result["cases"]["ort_floor"]["median_s"]
    result["handler_http_over_floor"] = result["cases"]["handler_http"]["median_s"] / floor
    result["handler_direct_over_floor"] = result["cases"]["handler_direct"]["median_s"] / floor
    result["torch_over_floor"] = result["cases"]["torch"]["median_s"] / floor
    if before is not None:
        for face in ("http", "direct"):
            result[f"before_handler_{face}_over_floor"] = (
                result["cases"][f"before_handler_{face}"]["median_s"] / floor
            )
    result["artifact"] = sizes(artifact, workdir)
    return result


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")
    cases, art = result["cases"], result["artifact"]
    lines = [
        "# Cold start: Lambda handler vs bare ONNX Runtime vs torch",
        "",
        f"{result['runs']} fresh processes per case, interleaved; Python {result['python']} on "
        f"{result['machine']}. Seconds from the first line of the script (interpreter start excluded; "
        "wall time including it in the last column).",
        "",
        "| case | median s | min s | max s | median wall s |",
        "|---|---|---|---|---|",
    ]
    for name, c in cases.items():
        lines.append(
            f"| {name} | {c['median_s']:.3f} | {c['min_s']:.3f} | {c['max_s']:.3f} | {c['median_wall_s']:.3f} |"
        )
    lines += [
        "",
        f"- handler / ORT floor: **{result['handler_http_over_floor']:.2f}x** for an HTTP API "
        f"event, **{result['handler_direct_over_floor']:.2f}x** for a direct invoke (target <= 1.5x)",
        *(
            [
                f"- before ({result['before']}), same run: "
                f"**{result['before_handler_http_over_floor']:.2f}x** HTTP API, "
                f"**{result['before_handler_direct_over_floor']:.2f}x** direct invoke"
            ]
            if "before" in result
            else []
        ),
        f"- torch / ORT floor: {result['torch_over_floor']:.1f}x",
        f"- artifact: **{art['unzipped_mb']:.1f} MB unzipped, {art['zipped_mb']:.1f} MB zipped** "
        "(targets < 100 MB, < 50 MB; hard limit 250 MB unzipped)",
        "",
    ]
    (RESULTS / "cold_start.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cases)
    figure, axis = plt.subplots(figsize=(max(7.0, 1.45 * len(names)), 3.4))
    axis.bar(
        names,
        [cases[n]["median_s"] for n in names],
        color=["#2a7", "#5b8", "#999", "#c53", "#9cb", "#9cb"][: len(names)],
    )
    axis.tick_params(axis="x", labelsize=8)
    axis.set_ylabel("cold start, s (median)")
    axis.set_title("import + load + one prediction, fresh process")
    for i, n in enumerate(names):
        axis.text(i, cases[n]["median_s"], f"{cases[n]['median_s']:.3f}", ha="center", va="bottom")
    figure.tight_layout()
    figure.savefig(RESULTS / "cold_start.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs per case (a smoke run).")
    parser.add_argument("--artifact", type=Path, help="A built artifact (default: build one).")
    parser.add_argument(
        "--before", metavar="REF", help="Also time the handler built from git ref REF (baseline)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strato-cold-") as tmp:
        workdir = Path(tmp)
        artifact = args.artifact or build_artifact(workdir / "artifact")
        before = build_before(args.before, workdir) if args.before else None
        result = measure(3 if args.quick else args.runs, artifact, workdir, before)
        if args.before:
            commit = ["git", "-C", str(REPO), "rev-parse", "--short", args.before]
            result["before"] = subprocess.run(
                commit, check=True, capture_output=True, text=True
            ).stdout.strip()
    write(result)
    print((RESULTS / "cold_start.md").read_text())


if __name__ == "__main__":
    main()
