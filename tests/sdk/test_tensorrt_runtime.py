"""TensorRT plan keys, matching against a device fingerprint, and the fallback to ONNX Runtime.

These run everywhere: the plans here are fake bytes that are never deserialized, because a plan
whose key does not match the device must never reach TensorRT.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, EngineMismatch
from strato._bundle import Artifact, write_manifest
from strato._engines import load_engine
from strato._engines import tensorrt_runtime as trt_engine
from strato._engines.tensorrt_runtime import engine_key, load_matching_plan, plan_matches, plan_path

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
JETSON = {"tensorrt": "10.3.0", "compute_capability": "8.7"}


def add_fake_plan(
    bundle: Bundle,
    *,
    precision: str = "fp16",
    version: str = "10.3.0",
    capability: str = "8.7",
    onnx_sha256: str | None = None,
    key: str | None = None,
) -> Bundle:
    """Add `engines/<key>.plan` (random bytes, not a real plan) with its key metadata."""
    source = onnx_sha256 or bundle.manifest.artifact("model.onnx").sha256
    real_key = engine_key(source, version, capability, precision)
    key = key or real_key
    path = bundle.root / plan_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).bytes(256))
    meta = {
        "key": key,
        "onnx_sha256": source,
        "version": version,
        "compute_capability": capability,
        "precision": precision,
    }
    artifact = Artifact.of_file(
        bundle.root, plan_path(key), kind="tensorrt", precision=precision, tensorrt=meta
    )
    manifest = bundle.manifest.with_artifacts([artifact])
    write_manifest(bundle.root, manifest)
    return Bundle.load(bundle.root)


def plan_of(bundle: Bundle) -> Artifact:
    return bundle.models("tensorrt")[0]


def test_engine_key_depends_on_every_part() -> None:
    base = engine_key("a" * 64, "10.3.0", "8.7", "fp16")
    assert base == engine_key("a" * 64, "10.3.0", "8.7", "fp16")
    assert len(base) == 24 and int(base, 16) >= 0
    others = {
        engine_key("b" * 64, "10.3.0", "8.7", "fp16"),
        engine_key("a" * 64, "10.3.1", "8.7", "fp16"),
        engine_key("a" * 64, "10.3.0", "7.2", "fp16"),
        engine_key("a" * 64, "10.3.0", "8.7", "int8"),
    }
    assert base not in others and len(others) == 4
    assert plan_path(base) == f"engines/{base}.plan"


def test_plan_matches_the_device_that_built_it(tiny_bundle: Bundle) -> None:
    bundle = add_fake_plan(tiny_bundle)
    onnx_hashes = {a.sha256 for a in bundle.models("onnx")}
    match = plan_matches(plan_of(bundle), JETSON, onnx_sha256s=onnx_hashes)
    assert match and match.reason == ""


@pytest.mark.parametrize(
    ("device", "reason"),
    [
        ({"tensorrt": None, "compute_capability": None}, "TensorRT is absent"),
        (
            {"tensorrt": "10.7.0", "compute_capability": "8.7"},
            "built with TensorRT 10.3.0, device has 10.7.0",
        ),
        (
            {"tensorrt": "10.3.0", "compute_capability": "7.2"},
            "compute capability 8.7, device is 7.2",
        ),
        ({"tensorrt": "10.3.0", "compute_capability": None}, "no GPU compute capability"),
    ],
)
def test_plan_mismatch_says_why(
    tiny_bundle: Bundle, device: dict[str, str | None], reason: str
) -> None:
    match = plan_matches(plan_of(add_fake_plan(tiny_bundle)), device)
    assert not match
    assert reason in match.reason


def test_tampered_key_and_foreign_onnx_do_not_match(tiny_bundle: Bundle) -> None:
    forged = add_fake_plan(tiny_bundle, key="0" * 24)
    assert "stored key does not match" in plan_matches(plan_of(forged), JETSON).reason

    other = add_fake_plan(tiny_bundle, onnx_sha256="f" * 64, precision="int8")
    stale = next(p for p in other.models("tensorrt") if p.precision == "int8")
    hashes = {a.sha256 for a in other.models("onnx")}
    assert plan_matches(stale, JETSON)  # the device matches …
    assert (
        "does not hold" in plan_matches(stale, JETSON, onnx_sha256s=hashes).reason
    )  # … the ONNX does not


def test_plan_metadata_must_be_complete(tiny_bundle: Bundle) -> None:
    plan = plan_of(add_fake_plan(tiny_bundle))
    broken = replace(plan, tensorrt={"version": "10.3.0"})
    assert "lacks" in plan_matches(broken, JETSON).reason
    assert "not a TensorRT plan" in plan_matches(tiny_bundle.manifest.artifacts[0], JETSON).reason


def test_mismatching_plan_raises_engine_mismatch_with_every_reason(tiny_bundle: Bundle) -> None:
    bundle = add_fake_plan(add_fake_plan(tiny_bundle), precision="int8", capability="7.2")
    device = {"tensorrt": "10.3.0", "compute_capability": "8.9"}
    with pytest.raises(EngineMismatch) as caught:
        load_matching_plan(bundle, fingerprint=device)
    assert str(caught.value).count("compute capability") == 2


def test_no_plan_of_the_asked_precision_is_none(tiny_bundle: Bundle) -> None:
    bundle = add_fake_plan(tiny_bundle, precision="fp16")
    assert load_matching_plan(bundle, precision="int8", fingerprint=JETSON) is None
    assert load_matching_plan(tiny_bundle, fingerprint=JETSON) is None


def test_wrong_key_plan_falls_back_to_onnx_runtime(
    tiny_bundle: Bundle, digit_batch: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """A plan for another GPU is never loaded: load_engine serves ONNX Runtime instead."""
    bundle = add_fake_plan(tiny_bundle, version="9.9.9", capability="1.0")
    with caplog.at_level(logging.INFO, logger="strato.engine"):
        engine = load_engine(bundle)
    assert engine.kind == "onnxruntime"
    assert engine.artifact.path == "model.onnx"
    assert "TensorRT plan not used" in caplog.text
    assert engine.infer({"input": digit_batch})["logits"].shape == (4, 10)
    # Asking for the plan's precision still serves: the ONNX default answers.
    assert load_engine(bundle, precision="fp16").kind == "onnxruntime"


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the fallback when TensorRT is NOT installed")
def test_matching_key_without_tensorrt_falls_back_cleanly(
    tiny_bundle: Bundle, digit_batch: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device claims TensorRT 10.3 on sm 8.7 (so the key matches) but `import tensorrt`
    fails: load_engine must log it and serve ONNX Runtime, not crash."""
    bundle = add_fake_plan(tiny_bundle)
    monkeypatch.setattr(trt_engine, "device_fingerprint", lambda: dict(JETSON))
    with pytest.raises(ImportError):
        load_matching_plan(bundle)
    engine = load_engine(bundle)
    assert engine.kind == "onnxruntime"
    assert engine.infer({"input": digit_batch})["logits"].shape == (4, 10)


def test_bundle_with_plan_round_trips_through_the_registry(
    tiny_bundle: Bundle, tmp_path: Path
) -> None:
    from strato import Registry

    registry = Registry(tmp_path / "reg")
    ref = registry.publish(add_fake_plan(tiny_bundle))
    plan = plan_of(registry.open(ref))
    assert plan.kind == "tensorrt" and plan.tensorrt is not None
    assert plan.path == plan_path(plan.tensorrt["key"])
