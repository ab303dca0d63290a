"""Publish a run as a verified bundle; load it back; serve it through strato.Client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, BundleError, Client, ConfigError, IntegrityError, Local, Registry
from strato_training.data import Dataset
from strato_training.publish import PublishConfig, publish
from strato_training.trainer import TrainResult


def test_publish_writes_a_manifest_per_design(
    exported_run: Path, trained_mlp: TrainResult, tmp_path: Path
) -> None:
    result = publish(exported_run, PublishConfig("digits-mlp", registry=str(tmp_path / "reg")))
    assert str(result.ref) == "digits-mlp:1"
    bundle = Registry(tmp_path / "reg").open("digits-mlp")  # verifies every sha256
    manifest = bundle.manifest
    assert [s.to_dict() for s in manifest.inputs] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    ]
    assert [s.to_dict() for s in manifest.outputs] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]}
    ]
    assert manifest.labels == tuple(str(i) for i in range(10))
    kinds = {a.path: (a.kind, a.precision) for a in manifest.artifacts}
    assert kinds["model.onnx"] == ("onnx", "fp32")
    for path in ("model.safetensors", "report.json", "confusion.png", "curves.png"):
        assert kinds[path] == ("file", None)
    onnx_metrics = manifest.metrics["model.onnx"]
    assert onnx_metrics["accuracy"] > 0.9 and onnx_metrics["parity"]["max_abs_diff"] <= 1e-4
    assert manifest.metrics["model.safetensors"]["split"] == "test"
    assert manifest.framework["exporter"] == "dynamo" and "onnxruntime" in manifest.framework
    assert manifest.opset == 18
    assert manifest.preprocessing["layout"] == "NCHW"
    assert manifest.extra["training"]["model"] == "mlp"
    assert bundle.select().path == "model.onnx"


def test_versions_count_up_and_never_overwrite(exported_run: Path, tmp_path: Path) -> None:
    registry = str(tmp_path / "reg")
    first = publish(exported_run, PublishConfig("digits", registry=registry, alias="prod"))
    second = publish(exported_run, PublishConfig("digits", registry=registry))
    assert (first.ref.version, second.ref.version) == ("1", "2")
    assert Registry(registry).aliases("digits") == {"prod": "1"}
    with pytest.raises(BundleError, match="immutable"):
        publish(exported_run, PublishConfig("digits", version="2", registry=registry))


def test_registry_root_from_the_environment(
    exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATO_REGISTRY", str(tmp_path / "from-env"))
    publish(exported_run, PublishConfig("env-model", include_checkpoint=False))
    bundle = Registry(tmp_path / "from-env").open("env-model")
    assert "model.safetensors" not in {a.path for a in bundle.manifest.artifacts}
    assert set(bundle.manifest.metrics) == {"model.onnx"}


def test_published_bundle_serves_through_the_client(
    exported_run: Path, digits: Dataset, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "reg")
    ref = publish(exported_run, PublishConfig("digits-mlp"), registry=registry).ref
    with Client(edge=Local(registry)) as client:
        prediction = client.predict(str(ref), digits.test.x)
        classes = client.classify("digits-mlp", digits.test.x[:5])
    assert prediction.served_by == "local" and prediction.model_version == "1"
    assert (prediction.output.argmax(1) == digits.test.y).mean() > 0.9
    assert classes.labels == [str(i) for i in prediction.output[:5].argmax(1)]


def test_a_flipped_byte_is_caught_on_load(exported_run: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    publish(exported_run, PublishConfig("digits-mlp"), registry=registry)
    onnx_file = tmp_path / "reg" / "digits-mlp" / "1" / "model.onnx"
    raw = bytearray(onnx_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        registry.open("digits-mlp")
    with pytest.raises(IntegrityError):
        Bundle.load(onnx_file.parent)


def test_publish_needs_an_exported_run(trained_mlp: TrainResult, tmp_path: Path) -> None:
    import shutil

    assert trained_mlp.run_dir is not None
    run = tmp_path / "unexported"
    run.mkdir()
    for name in ("run.json", "model.safetensors"):
        shutil.copy2(trained_mlp.run_dir / name, run / name)
    with pytest.raises(ConfigError, match="strato export"):
        publish(run, PublishConfig("m", registry=str(tmp_path / "reg")))
    with pytest.raises(ConfigError, match="strato train"):
        publish(tmp_path / "nothing", PublishConfig("m", registry=str(tmp_path / "reg")))


@pytest.mark.parametrize("name", ["", "../escape", "has space", "-dash"])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid model reference"):
        PublishConfig(name)


def test_labels_and_signature_from_the_bundle(exported_run: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    publish(exported_run, PublishConfig("digits-mlp"), registry=registry)
    bundle = registry.open("digits-mlp:1")
    x = np.zeros((2, 1, 28, 28), np.float32)
    bundle.manifest.inputs[0].check(x)
    assert bundle.labels[3] == "3"
