"""`strato cloud package | params | local` through the real CLI (Typer's CliRunner)."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from strato import Bundle, Registry, TensorSpec
from strato._bundle import make_bundle
from strato._cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


def test_package_writes_a_sagemaker_archive(tiny_registry: Registry, tmp_path: Path) -> None:
    output = tmp_path / "model.tar.gz"
    result = runner.invoke(
        app,
        [
            "cloud",
            "package",
            "tiny@prod",
            "-r",
            str(tiny_registry.url),
            "-o",
            str(output),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["model"] == "tiny:1" and info["bytes"] == output.stat().st_size
    extracted = tmp_path / "opt-ml-model"
    with tarfile.open(output) as archive:
        assert sorted(archive.getnames()) == ["manifest.json", "model.onnx"]
        archive.extractall(extracted, filter="data")
    assert Bundle.load(extracted).ref == "tiny:1"  # every sha256 still verifies


def test_package_leaves_tensorrt_plans_out(tiny_bundle: Bundle, tmp_path: Path) -> None:
    root = tiny_bundle.root
    (root / "engines").mkdir()
    (root / "engines" / "orin.plan").write_bytes(b"plan bytes")
    make_bundle(
        root,
        name="tiny",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[
            {"path": "model.onnx", "kind": "onnx", "precision": "fp32"},
            {"path": "engines/orin.plan", "kind": "tensorrt", "precision": "fp16"},
        ],
    )
    output = tmp_path / "model.tar.gz"
    result = runner.invoke(app, ["cloud", "package", str(root), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "tiny:1" in result.output
    with tarfile.open(output) as archive:
        assert "engines/orin.plan" not in archive.getnames()
        archive.extractall(tmp_path / "x", filter="data")
    assert [a.kind for a in Bundle.load(tmp_path / "x").manifest.artifacts] == ["onnx"]


def test_package_is_reproducible_and_holds_only_what_the_server_loads(
    tiny_bundle: Bundle, tmp_path: Path
) -> None:
    root = tiny_bundle.root
    (root / "report.md").write_text("# training report\n")
    (root / "model.int8.onnx").write_bytes((root / "model.onnx").read_bytes())
    make_bundle(
        root,
        name="tiny",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[
            {"path": "model.onnx", "kind": "onnx", "precision": "fp32"},
            {"path": "model.int8.onnx", "kind": "onnx", "precision": "int8"},
            {"path": "report.md", "kind": "file"},
        ],
    )
    first, second = tmp_path / "a" / "model.tar.gz", tmp_path / "b" / "model.tar.gz"
    assert runner.invoke(app, ["cloud", "package", str(root), "-o", str(first)]).exit_code == 0
    for path in root.rglob("*"):  # another checkout: other file times, same bundle
        os.utime(path, (1_700_000_000, 1_700_000_000))
    time.sleep(1.1)  # and another second on the clock (gzip headers carry one by default)
    assert runner.invoke(app, ["cloud", "package", str(root), "-o", str(second)]).exit_code == 0
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["manifest.json", "model.onnx"]  # sorted, served only
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)
    }
    assert first.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field


def test_params_alias_and_pinned(tiny_registry: Registry) -> None:
    root = str(tiny_registry.url)
    result = runner.invoke(app, ["cloud", "params", "tiny@prod", "-r", root, "--stage", "prod"])
    assert result.exit_code == 0, result.output
    assert (
        "sam deploy --parameter-overrides ModelUri=registry/tiny@prod Stage=prod" in result.output
    )
    assert "registry/tiny/aliases.json" in result.output
    pinned = runner.invoke(
        app,
        ["cloud", "params", "tiny", "-r", root, "--json", "--sagemaker-image", "123.dkr.ecr/x:1"],
    )
    doc = json.loads(pinned.output)
    assert doc["parameter_overrides"]["ModelUri"] == "registry/tiny/2"
    assert doc["parameter_overrides"]["EnableSageMaker"] == "true"
    assert doc["parameter_overrides"]["SageMakerModelDataKey"] == "sagemaker/tiny-2/model.tar.gz"


def test_params_unknown_model_fails_clearly(tiny_registry: Registry) -> None:
    result = runner.invoke(app, ["cloud", "params", "nope@prod", "-r", str(tiny_registry.url)])
    assert result.exit_code != 0
    assert "nope" in str(result.exception) + result.output


def test_local_refuses_a_model_it_cannot_load(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["cloud", "local", "--model-uri", str(tmp_path / "missing@prod"), "--port", "0"]
    )
    assert result.exit_code == 1  # the work failed (nothing to load), not the command line
    assert "ModelNotFound" in result.output and "missing" in result.output


def test_help_has_examples() -> None:
    for command in ("local", "package", "params"):
        result = runner.invoke(app, ["cloud", command, "--help"])
        assert result.exit_code == 0 and "Example: strato cloud" in result.output
