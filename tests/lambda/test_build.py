"""The Lambda artifact built by `lambda/Makefile` (SAM `BuildMethod: makefile`) for this host.

Built once per session (pip downloads wheels into its cache the first time). The function is
then imported in a clean interpreter that sees only the artifact, the standard library and the
packages the python3.12 runtime provides (boto3 & co), as Lambda would run it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six.py")
MB = 1_000_000


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    target = tmp_path_factory.mktemp("lambda-build") / "artifact"
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    command = [
        "make",
        "-s",
        "-C",
        str(REPO / "lambda"),
        "build-StratoFunction",
        f"ARCH={arch}",
        f"PYTHON_VERSION={sys.version_info.major}.{sys.version_info.minor}",
        f"PYTHON={sys.executable}",
        f"ARTIFACTS_DIR={target}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if "Could not find a version" in output or "Failed to establish" in output:
            pytest.skip(f"wheels not reachable from this machine: {output[-400:]}")
        raise AssertionError(f"lambda build failed:\n{output[-3000:]}")
    return target


@pytest.fixture(scope="session")
def runtime_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the python3.12 runtime adds after /var/task: boto3 and its dependencies."""
    import boto3

    site = Path(boto3.__file__).parents[1]
    runtime = tmp_path_factory.mktemp("var-runtime")
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return runtime


def test_artifact_has_no_torch_no_nvidia_no_boto3(artifact: Path) -> None:
    names = {p.name.lower() for p in artifact.iterdir()}
    assert not {n for n in names if n.startswith(("torch", "nvidia", "triton", "tensorrt"))}
    assert not {n for n in names if n.startswith(("boto3", "botocore", "s3transfer"))}
    assert not {n for n in names if n.startswith(("sympy", "onnx-", "onnx_", "strato_training"))}
    assert {"strato", "strato_lambda", "onnxruntime", "numpy", "aws_lambda_powertools"} <= names


def test_artifact_size(artifact: Path, tmp_path: Path) -> None:
    unzipped = _tree_size(artifact)
    archive = tmp_path / "function.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as bundle:
        for path in sorted(artifact.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(artifact).as_posix())
    zipped = archive.stat().st_size
    print(f"\nLambda artifact: {unzipped / MB:.1f} MB unzipped, {zipped / MB:.1f} MB zipped")
    assert unzipped < 250 * MB  # Lambda's hard limit (function + layers, unzipped)
    assert zipped < 50 * MB  # direct-upload limit


def _run_clean(artifact: Path, runtime: Path, code: str, env: dict[str, str]) -> Any:
    """Run `code` with only the artifact, the stdlib and the runtime's packages importable."""
    prelude = f"import sys; sys.path[:0] = [{str(artifact)!r}]; sys.path.append({str(runtime)!r})\n"
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=artifact,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


CLEAN_RUN = """
import json
event = json.loads({event!r})
import strato_lambda.app as app
from strato_lambda.emulator import InvocationContext
answer = app.handler(event, InvocationContext())
import strato._envelope as envelope
direct = app.handler(envelope.pack(event["body"].encode(), None, model="tiny", version=None), InvocationContext())
heavy = sorted(m for m in ("torch", "tensorrt", "sympy", "onnx") if m in sys.modules)
print(json.dumps({{"status": answer["statusCode"], "body": answer["body"], "direct": direct["status"],
                  "tracer": app.tracer is not None, "heavy": heavy}}))
"""


def test_clean_interpreter_answers_http_api_event(
    artifact: Path, runtime_site: Path, tiny_bundle: Any, tmp_path: Path
) -> None:
    task_root = tmp_path / "task"
    task_root.mkdir()
    shutil.copytree(tiny_bundle.root, task_root / "model")  # a bundle packaged with the function
    event = (Path(__file__).parent / "events" / "http_infer_json.json").read_text()
    env = {
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": "strato-infer",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    result = _run_clean(artifact, runtime_site, CLEAN_RUN.format(event=event), env)
    assert result["status"] == 200 and result["direct"] == 200
    assert json.loads(result["body"])["outputs"][0]["shape"] == [1, 10]
    assert result["heavy"] == [] and result["tracer"] is False


def test_clean_interpreter_with_tracing_and_no_xray_daemon(
    artifact: Path, runtime_site: Path, tiny_bundle: Any, root_helpers: Any
) -> None:
    event = (Path(__file__).parent / "events" / "http_infer_json.json").read_text()
    env = {
        "LAMBDA_TASK_ROOT": str(artifact),
        "STRATO_MODEL_URI": str(tiny_bundle.root),
        "AWS_LAMBDA_FUNCTION_NAME": "strato-infer",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{root_helpers.free_port()}",  # nobody listens
    }
    result = _run_clean(artifact, runtime_site, CLEAN_RUN.format(event=event), env)
    assert result["status"] == 200 and result["tracer"] is True
