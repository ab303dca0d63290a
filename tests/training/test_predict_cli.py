"""`strato predict REF -i FILE.npz`: arrays go to the inputs of the same names; models that are
not classifiers print their output values, classifiers their labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import support
from onnx import TensorProto, helper, numpy_helper
from strato import Registry
from strato_training import ImportConfig, import_onnx

STRATO = str(Path(sys.executable).with_name("strato"))


def write_two_input_onnx(path: Path) -> None:
    """ids INT64 [batch, seq] and keep BOOL [batch, seq] → total INT64 [batch, 1], score FP32."""
    import onnx

    graph = helper.make_graph(
        [
            helper.make_node("Where", ["keep", "ids", "zero"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=1),
            helper.make_node("Cast", ["total"], ["total_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["total_f", "half"], ["score"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            numpy_helper.from_array(np.asarray(0, np.int64), "zero"),
            numpy_helper.from_array(np.asarray([1], np.int64), "axis"),
            numpy_helper.from_array(np.asarray(0.5, np.float32), "half"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("predict-cli")
    registry = Registry(root / "registry")
    write_two_input_onnx(root / "two.onnx")
    import_onnx(root / "two.onnx", ImportConfig(name="two", task="generic"), registry=registry)
    registry.publish(support.build_tiny_bundle(root / "tiny"))
    return registry


def strato(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STRATO, *args], capture_output=True, text=True, timeout=120, check=False)


def test_npz_arrays_map_to_inputs_by_name_and_values_print(registry: Registry, tmp_path: Path):
    ids = np.asarray([[1, 2, 3], [4, 5, 6]], np.int64)
    keep = np.asarray([[True, False, True], [True, True, True]])
    np.savez(tmp_path / "in.npz", keep=keep, ids=ids)  # order differs from the model's
    done = strato("predict", "two", "-i", str(tmp_path / "in.npz"), "-r", registry.url, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["task"] == "generic"
    assert answer["outputs"]["total"] == [[4], [15]]
    assert answer["outputs"]["score"] == [[2.0], [7.5]]
    session = ort.InferenceSession(str(registry.open("two").path_of("model.onnx")))
    total, _ = session.run(None, {"ids": ids, "keep": keep})
    assert answer["outputs"]["total"] == total.tolist()
    text = strato("predict", "two", "-i", str(tmp_path / "in.npz"), "-r", registry.url)
    assert text.returncode == 0, text.stderr
    assert "total int64 [2, 1]" in text.stdout
    assert "confidence" not in text.stdout


def test_an_npz_missing_an_input_is_refused_by_name(registry: Registry, tmp_path: Path):
    np.savez(tmp_path / "in.npz", ids=np.ones((1, 3), np.int64))
    done = strato("predict", "two", "-i", str(tmp_path / "in.npz"), "-r", registry.url)
    assert done.returncode == 2
    assert "the model takes ['ids', 'keep'] (missing ['keep'])" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_classifier_still_prints_labels(registry: Registry, tmp_path: Path):
    np.savez(tmp_path / "x.npz", pixels=np.random.default_rng(0).random((2, 1, 28, 28), np.float32))
    done = strato("predict", "tiny", "-i", str(tmp_path / "x.npz"), "-r", registry.url, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["predictions"]
    assert len(rows) == 2 and all(0 < row["confidence"] <= 1 for row in rows)
