"""`strato edge …` commands: a real `strato edge serve` subprocess, and the client commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from strato._cli import app
from strato._errors import ConfigError
from support import free_port
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(180)

STRATO = str(Path(sys.executable).with_name("strato"))
runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture
def served_registry(tiny_registry):
    """`strato edge serve` in a subprocess, as the demo runs it; stopped with SIGTERM."""
    port = free_port()
    env = {**os.environ, "STRATO_EDGE_TOKEN": ""}
    process = subprocess.Popen(
        [STRATO, "edge", "serve", "--store", tiny_registry.url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
    yield url, process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_announces_itself_and_stops_cleanly(served_registry):
    url, process = served_registry
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"strato edge serving 1 model(s) on {url}" in output.splitlines()


def test_models_predict_bench_status_against_a_running_server(
    served_registry, tiny_registry, tmp_path
):
    url, _ = served_registry
    models = json.loads(_invoke("edge", "models", "--url", url, "--json"))
    assert models[0]["name"] == "tiny" and models[0]["parameters"]["version"] == "1"
    assert "tiny:1  fp32 on onnxruntime" in _invoke("edge", "models", "--url", url)

    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for body in ("--binary", "--json-body"):
        out = json.loads(
            _invoke(
                "edge",
                "predict",
                "tiny",
                "-i",
                str(tmp_path / "x.npy"),
                "--url",
                url,
                body,
                "--json",
            )
        )
        assert out["model"] == "tiny:1" and len(out["top"]) == 2 and out["precision"] == "fp32"
    assert _invoke("edge", "predict", "tiny:2", "--random", "--url", url).startswith("[0] ")

    bench = json.loads(
        _invoke(
            "edge", "bench", "tiny", "--url", url, "-c", "2", "-d", "1", "--warmup", "0", "--json"
        )
    )
    assert bench["requests"] > 0 and bench["errors"] == 0
    assert bench["p50_ms"] <= bench["p99_ms"]
    assert "req/s" in _invoke(
        "edge",
        "bench",
        "tiny",
        "--url",
        url,
        "-c",
        "1",
        "-d",
        "0.5",
        "--warmup",
        "0",
        "--json-body",
    )

    status = json.loads(
        _invoke("edge", "status", "--store", tiny_registry.url, "--url", url, "--json")
    )
    assert status["models"][0]["serving"] == "1"
    assert status["server"]["ready"] is True


def test_client_commands_report_http_errors(served_registry):
    url, _ = served_registry
    result = runner.invoke(app, ["edge", "predict", "nope", "--random", "--url", url])
    assert result.exit_code == 1  # the server refused the work: 1, not a usage error
    assert "404" in result.output


def test_pull_rollback_status_commands(tiny_registry, tmp_path):
    store = str(tmp_path / "device")
    _invoke("edge", "pull", "tiny:1", "--registry", tiny_registry.url, "--store", store)
    out = _invoke("edge", "pull", "tiny:2", "-r", tiny_registry.url, "-s", store)
    assert "tiny:2 downloaded; current → 2 (was 1)" in out
    assert json.loads(_invoke("edge", "rollback", "tiny", "--store", store, "--json")) == {
        "model": "tiny",
        "current": "1",
    }
    status = json.loads(_invoke("edge", "status", "--store", store, "--json"))
    assert status["models"][0]["versions"] == ["1", "2"]
    assert status["models"][0]["serving"] == "1"
    assert "tiny" in _invoke("edge", "status", "--store", store)


def test_serve_refuses_a_public_bind_without_token(tiny_registry, monkeypatch):
    monkeypatch.delenv("STRATO_EDGE_TOKEN", raising=False)
    result = runner.invoke(
        app, ["edge", "serve", "--store", tiny_registry.url, "--host", "0.0.0.0", "--port", "0"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "token" in str(result.exception)


def test_serve_refuses_a_missing_store(tmp_path):
    result = runner.invoke(app, ["edge", "serve", "--store", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_fingerprint_command():
    pytest.importorskip("strato._device", reason="strato._device not built yet")
    out = json.loads(_invoke("edge", "fingerprint", "--json"))
    assert isinstance(out, dict) and out
    assert _invoke("edge", "fingerprint").strip()


def test_importing_strato_edge_loads_no_torch_or_onnxruntime():
    code = (
        "import sys, strato_edge, strato_edge.cli, strato_edge.server;"
        "print([m for m in ('torch', 'onnxruntime', 'boto3', 'tensorrt') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _as_a_terminal() -> dict[str, str]:
    # rich draws live bars only for a terminal; these make it draw into the captured stderr
    return {**os.environ, "TTY_COMPATIBLE": "1", "FORCE_COLOR": "1", "COLUMNS": "160"}


def test_pull_and_bench_show_progress_with_sizes_and_rates(
    served_registry, tiny_registry, tmp_path
):
    url, _ = served_registry
    pull = subprocess.run(
        [STRATO, "edge", "pull", "tiny@prod", "-r", tiny_registry.url, "-s", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120, env=_as_a_terminal(),
    )  # fmt: skip
    assert pull.returncode == 0, pull.stderr
    size = tiny_registry.manifest("tiny:1").artifacts[0].size / 1000
    assert f"{size:.1f} kB" in pull.stderr  # the bar names what it downloads
    bench = subprocess.run(
        [STRATO, "edge", "bench", "tiny", "-d", "2", "--warmup", "0.5", "--url", url],
        capture_output=True, text=True, timeout=120, env=_as_a_terminal(),
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert "req/s" in bench.stderr and "answers" in bench.stderr  # the live rate
    assert "req/s" in bench.stdout  # and the result line


def test_predict_never_fills_an_input_at_random_unless_asked(served_registry, tmp_path):
    url, _ = served_registry
    bare = runner.invoke(app, ["edge", "predict", "tiny", "--url", url])
    assert bare.exit_code == 2 and "--random" in bare.output and "--input" in bare.output
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    both = runner.invoke(
        app, ["edge", "predict", "tiny", "-i", str(tmp_path / "x.npy"), "--random", "--url", url]
    )
    assert both.exit_code == 2 and "exactly one" in both.output
    asked = json.loads(_invoke("edge", "predict", "tiny", "--random", "--url", url, "--json"))
    assert asked["model"] == "tiny:1" and len(asked["top"]) == 1


def test_strato_predict_takes_url_for_a_daemon_and_edge_as_its_old_spelling(
    served_registry, tmp_path
):
    url, _ = served_registry
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    x = str(tmp_path / "x.npy")
    new = json.loads(_invoke("predict", "tiny", "-i", x, "--url", url, "--json"))
    old = json.loads(_invoke("predict", "tiny", "-i", x, "--edge", url, "--json"))
    for answer in (new, old):
        answer.pop("latency_ms")
    assert new == old and new["model"] == "tiny:1" and new["served_by"] == "edge"
    assert "--edge" not in runner.invoke(app, ["predict", "--help"]).output  # hidden alias
    clash = runner.invoke(app, ["predict", "tiny", "-i", x, "--url", url, "--edge", url + "/x"])
    assert clash.exit_code == 2 and "disagree" in clash.output
    bare = runner.invoke(app, ["predict", "tiny", "--url", url])  # no rows: never made up
    assert bare.exit_code == 2 and "--input" in bare.output
