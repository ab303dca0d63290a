"""Issue 10 item 6, models over 2 GB: weights in `<model>.data` are loaded from verified bytes.

`InferenceSession(bytes)` alone cannot load a graph whose initializers live in an external-data
file (ONNX Runtime refuses the path for a model given as bytes), so every model `save_model`
writes with `model.onnx.data` failed to serve. The engine now hands ONNX Runtime the hashed bytes
of that artifact too (`add_external_initializers_from_files_in_memory`): nothing is re-opened
after the check. The threshold is lowered so a tiny MatMul is saved with external data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from strato import (
    Bundle,
    BundleError,
    InferRequest,
    IntegrityError,
    Local,
    Registry,
    TensorSpec,
    make_bundle,
)

onnx = pytest.importorskip("onnx")
graph_module = pytest.importorskip("strato_training.graph")

WEIGHTS = np.arange(64 * 8, dtype=np.float32).reshape(64, 8) / 100.0


def _external_bundle(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Bundle:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(graph_module, "EXTERNAL_DATA_LIMIT", 0)  # not 2 GB in a test
    specs = graph_module.save_model(model, folder)
    assert [s["path"] for s in specs] == ["model.onnx", "model.onnx.data"]
    return make_bundle(
        folder,
        name="big",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 64))],
        outputs=[TensorSpec("logits", "FP32", (-1, 8))],
        artifacts=specs,
    )


def _logits(local: Local, batch: np.ndarray) -> np.ndarray:
    return np.asarray(local.infer(InferRequest("big", {"input": batch})).outputs["logits"])


def test_a_model_with_external_data_serves_from_verified_bytes(tmp_path, monkeypatch):
    registry = Registry(tmp_path / "reg")
    registry.publish(_external_bundle(tmp_path / "build", monkeypatch), alias="prod")
    local_copy = registry.download("big:1", tmp_path / "dev" / "big" / "1")
    batch = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    local = Local(Bundle.load(local_copy.root))
    np.testing.assert_allclose(_logits(local, batch), batch @ WEIGHTS, rtol=1e-5)


def test_external_data_changed_after_the_check_is_never_loaded(tmp_path, monkeypatch):
    bundle = _external_bundle(tmp_path / "build", monkeypatch)
    verified = Bundle.load(bundle.root)  # every sha256 checked here ...
    data = bundle.root / "model.onnx.data"
    data.write_bytes(np.zeros_like(WEIGHTS).tobytes())  # ... then the weights are swapped
    with pytest.raises(IntegrityError, match=r"model\.onnx\.data"):
        Local(verified).infer(InferRequest("big", {"input": np.ones((1, 64), np.float32)}))


def test_a_graph_naming_a_file_outside_its_manifest_never_reads_the_working_directory(
    tmp_path, monkeypatch
):
    """From bytes, ONNX Runtime looked for external data in the process's working directory: a
    graph naming `secret.bin` served a planted (or private) file of that name as its weights."""
    bundle = _external_bundle(tmp_path / "build", monkeypatch)
    (bundle.root / "model.onnx.data").rename(tmp_path / "kept.data")
    manifest = bundle.manifest
    make_bundle(  # the manifest no longer lists the data file; the graph still names it
        bundle.root,
        name="big",
        version="1",
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "model.onnx.data").write_bytes(np.full_like(WEIGHTS, 7.0).tobytes())
    monkeypatch.chdir(cwd)
    local = Local(Bundle.load(bundle.root))
    with pytest.raises(BundleError, match="External data"):
        _logits(local, np.ones((1, 64), np.float32))
