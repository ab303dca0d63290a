"""`strato train | evaluate | export | publish | quickstart` end to end, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from strato import Registry
from strato._cli import app
from typer.testing import CliRunner

runner = CliRunner()
STRATO = str(Path(sys.executable).parent / "strato")


def invoke(*args: str) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "publish", "quickstart"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: strato " + command in result.stdout


@pytest.mark.timeout(300)
def test_train_evaluate_export_publish(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    trained = invoke("train", "--epochs", "4", "--threads", "1", "--out", run, "-q", "--json")
    assert trained["world_size"] == 1 and len(trained["history"]) == 4
    report = invoke("evaluate", run, "-q", "--json")
    assert report["accuracy"] > 0.85 and len(report["per_class"]) == 10
    exported = invoke("export", run, "-q", "--json")
    assert exported["onnx"]["exporter"] == "dynamo" and exported["parity"]["top1_agreement"] == 1
    registry = str(tmp_path / "reg")
    published = invoke(
        "publish", run, "--name", "cli-mlp", "--alias", "prod", "-r", registry, "--json"
    )
    assert published["ref"] == "cli-mlp:1"
    assert Registry(registry).aliases("cli-mlp") == {"prod": "1"}
    text = runner.invoke(app, ["evaluate", run, "-q"])
    assert "macro F1" in text.stdout


@pytest.mark.timeout(300)
def test_quickstart_is_the_whole_demo(tmp_path: Path) -> None:
    """`make demo`: train → optimize → publish → edge daemon + Lambda emulator → cascade routing."""
    registry = str(tmp_path / "reg")
    summary = invoke(
        "quickstart", "-r", registry, "--workdir", str(tmp_path / "work"), "-q", "--json"
    )
    assert summary["model"] == "digits-mlp:2"  # the optimized version
    assert summary["optimize"]["from"] == "digits-mlp:1"
    assert summary["accuracy"] >= 0.95
    assert summary["macro_f1"] >= 0.94
    assert summary["served"]["served_by"] == "local"
    assert summary["p50_latency_ms"] > 0
    assert summary["parity"]["max_abs_diff"] <= 1e-4
    assert 300_000 < summary["model_size_bytes"] < 600_000
    for path in summary["artifacts"].values():
        assert Path(path).is_file()
    assert list(summary["timings"]) == [
        "data",
        "train",
        "evaluate",
        "export",
        "parity",
        "publish",
        "optimize",
        "load",
        "predict",
        "serve-edge",
        "serve-cloud",
        "route",
        "summary",
    ]
    routing = summary["routing"]
    assert routing["edge"]["calls"] + routing["cloud"]["calls"] == routing["samples"] == 360
    assert routing["edge"]["calls"] > routing["cloud"]["calls"] > 0
    assert routing["cascade_accuracy"] >= 0.95
    assert summary["edge"]["model"] == "digits-mlp:2"
    assert summary["cloud"]["model"] == "digits-mlp:1"
    # the servers were stopped
    import httpx

    with pytest.raises(httpx.TransportError):
        httpx.get(summary["edge"]["url"] + "/v2/health/live", timeout=1)
    Registry(registry).open("digits-mlp:1")


def test_quickstart_without_serving(tmp_path: Path) -> None:
    summary = invoke(
        "quickstart",
        "-r",
        str(tmp_path / "reg"),
        "--workdir",
        str(tmp_path / "work"),
        "--no-optimize",
        "--no-serve",
        "-q",
        "--json",
    )
    assert summary["model"] == "digits-mlp:1"
    assert "routing" not in summary and "optimize" not in summary


def test_a_missing_dataset_exits_with_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [STRATO, "train", "--dataset", f"npz:{tmp_path / 'nope.npz'}", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.timeout(300)
def test_torchrun_launch_matches_the_documented_line(tmp_path: Path) -> None:
    """The documented `torchrun ... strato train` line trains one model over two ranks."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            STRATO,
            "train",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "run"),
            "-q",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout)  # only rank 0 prints
    assert info["world_size"] == 2
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_quickstart_with_a_relative_registry_still_quantizes(tmp_path: Path) -> None:
    """`make demo` passes the default, relative `.strato/registry`."""
    done = subprocess.run(
        [STRATO, "quickstart", "-r", "reg", "--workdir", "work", "--no-serve", "-q", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["optimize"]["default"].startswith("model.int8")
    assert (tmp_path / "reg" / "digits-mlp" / "2" / "manifest.json").is_file()
