"""TensorRT compile: clear errors without TensorRT (here), and on a GPU machine a real build, run
and parity check against ONNX Runtime (`scripts/gpu-check.sh` runs those)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from strato import Bundle, ConfigError, ExportError, InvalidInput, Registry
from strato._cli import app
from strato._engines import load_engine
from strato_training.data import Dataset
from strato_training.tensorrt_build import (
    BatchProfile,
    compile_bundle,
    compile_tensorrt,
    source_artifact,
)
from typer.testing import CliRunner

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _gpu_ready() -> str:
    """Empty when TensorRT, cuda-python and a CUDA GPU are all here; else why not."""
    if not HAS_TENSORRT:
        return "TensorRT is not installed (import tensorrt fails)"
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed (the TensorRT runner copies through it)"
    from strato._device import compute_capability

    if compute_capability() is None:
        return "no CUDA GPU found"
    return ""


GPU_REASON = _gpu_ready()


def test_batch_profile_parse_and_validation() -> None:
    assert BatchProfile.parse("1,8,64") == BatchProfile(1, 8, 64)
    assert BatchProfile().to_dict() == {"min": 1, "opt": 32, "max": 256}
    with pytest.raises(ConfigError, match="MIN,OPT,MAX"):
        BatchProfile.parse("1,8")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        BatchProfile(8, 4, 64)


def test_source_artifact_for_each_precision(tiny_bundle: Bundle) -> None:
    assert source_artifact(tiny_bundle, "fp16").path == "model.onnx"
    assert source_artifact(tiny_bundle, "fp32").path == "model.onnx"
    with pytest.raises(ExportError, match="int8-static"):
        source_artifact(tiny_bundle, "int8")
    with pytest.raises(ExportError, match="fp16 plan"):
        source_artifact(tiny_bundle, "fp16", tensorrt_has_fp16_flag=False)


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the error where TensorRT is absent")
def test_compile_without_tensorrt_says_so(tiny_bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="TensorRT is not available"):
        compile_tensorrt(tiny_bundle.path_of("model.onnx"), "fp16", out_dir=tmp_path)


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the error where TensorRT is absent")
def test_strato_compile_cli_without_tensorrt(tiny_registry: Registry) -> None:
    result = CliRunner().invoke(
        app, ["compile", "tiny:1", "--precision", "fp16", "--registry", tiny_registry.url]
    )
    assert isinstance(result.exception, ExportError)
    assert "TensorRT is not available" in str(result.exception)
    assert tiny_registry.versions("tiny") == ["1", "2"]


def test_strato_compile_cli_rejects_bad_options(tiny_registry: Registry) -> None:
    runner = CliRunner()
    bad_target = runner.invoke(
        app, ["compile", "tiny:1", "--target", "openvino", "-r", tiny_registry.url]
    )
    assert bad_target.exit_code == 2 and "tensorrt" in bad_target.output
    bad_precision = runner.invoke(
        app, ["compile", "tiny:1", "--precision", "int4", "-r", tiny_registry.url]
    )
    assert bad_precision.exit_code == 2


def test_compile_rejects_unknown_precision(tiny_bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        compile_tensorrt(tiny_bundle.path_of("model.onnx"), "int4", out_dir=tmp_path)


# ---- on a GPU with TensorRT 10 -------------------------------------------------------------


def publish_linear(registry: Registry, root: Path, digits: Dataset) -> None:
    """A logistic-regression digits classifier as a one-Gemm ONNX, published as linear:1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression
    from strato import TensorSpec
    from strato._bundle import make_bundle

    clf = LogisticRegression(max_iter=300).fit(
        digits.train.x.reshape(len(digits.train), -1), digits.train.y
    )
    weights = [
        numpy_helper.from_array(clf.coef_.T.astype(np.float32), "w"),
        numpy_helper.from_array(clf.intercept_.astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    root.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "model.onnx"))
    registry.publish(
        make_bundle(
            root,
            name="linear",
            version="1",
            inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
            outputs=[TensorSpec("logits", "FP32", (-1, 10))],
            artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
            labels=digits.labels,
        )
    )


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(bool(GPU_REASON), reason=GPU_REASON or "ok")
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 3e-2)])
def test_build_run_and_match_onnx_runtime(
    tiny_registry: Registry, digit_batch: np.ndarray, precision: str, atol: float
) -> None:
    ref, plan = compile_bundle(tiny_registry, "tiny:1", precision, profile=BatchProfile(1, 8, 64))
    bundle = tiny_registry.open(ref)
    assert bundle.manifest.artifact(f"engines/{plan.key}.plan").tensorrt == plan.metadata
    engine = load_engine(bundle, precision=precision)
    assert engine.kind == "tensorrt", engine.describe()
    reference = load_engine(bundle, prefer_tensorrt=False)
    for batch in (1, 4, 64):
        x = np.resize(digit_batch, (batch, 1, 28, 28)).astype(np.float32)
        got = engine.infer({"input": x})["logits"]
        want = reference.infer({"input": x})["logits"]
        assert got.shape == want.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=atol, rtol=atol)
    with pytest.raises(InvalidInput):
        engine.infer({"input": np.zeros((65, 1, 28, 28), np.float32)})  # beyond the profile
    meta = plan.metadata
    assert bundle.path_of(
        f"engines/timing-{meta['version']}-sm{meta['compute_capability']}.cache"
    ).is_file()
    engine.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(bool(GPU_REASON), reason=GPU_REASON or "ok")
@pytest.mark.timeout(600)
def test_int8_plan_from_the_qdq_artifact_agrees_with_onnx_runtime(tmp_path: Path) -> None:
    from strato._engines.onnxruntime import OnnxRuntimeEngine
    from strato_training.data import load_dataset
    from strato_training.optimize import quantize_bundle

    digits = load_dataset("digits", seed=0)
    registry = Registry(tmp_path / "reg")
    publish_linear(registry, tmp_path / "src", digits)
    quantized, _ = quantize_bundle(registry, "linear:1", digits)
    ref, plan = compile_bundle(registry, quantized, "int8")
    assert plan.metadata["strongly_typed"] is True
    bundle = registry.open(ref)
    engine = load_engine(bundle, precision="int8")
    assert engine.kind == "tensorrt"
    got = engine.infer({"input": digits.test.x})["logits"].argmax(axis=1)
    qdq = bundle.manifest.artifact("model.int8.qdq.onnx")
    want = OnnxRuntimeEngine(bundle, qdq, providers=["CPUExecutionProvider"]).infer(
        {"input": digits.test.x}
    )
    assert (got == want["logits"].argmax(axis=1)).mean() >= 0.97
    assert (got == digits.test.y).mean() >= 0.85
    engine.close()
