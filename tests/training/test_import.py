"""`strato import` / `import_onnx` / `import_module`: signatures, dynamic axes, output names,
the parity gate on every output, preprocessing baked into the graph, and the errors users hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from strato import Client, ConfigError, ExportError, Local, ParityError, Registry
from strato_training import ImportConfig, Preprocessing, import_module, import_onnx
from strato_training.graph import rename_outputs
from strato_training.module_export import parse_dynamic
from strato_training.parity import gate_outputs, probe_inputs
from torch import nn

STRATO = str(Path(sys.executable).with_name("strato"))


class Embedder(nn.Module):
    """Named `embedding` inside: an output named `embedding` collides without the rename."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(20, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(1, keepdim=True)


def token_examples(batch: int = 2, seq: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(0, 20, (batch, seq)).astype(np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
    }


def write_linear_onnx(path: Path, *, dims: tuple[str | int, ...] = ("N", 3)) -> np.ndarray:
    w = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 2])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def test_import_onnx_reads_names_datatypes_and_dynamic_dims(tmp_path: Path) -> None:
    w = write_linear_onnx(tmp_path / "linear.onnx")
    registry = Registry(tmp_path / "reg")
    bundle = import_onnx(tmp_path / "linear.onnx", ImportConfig(name="linear"), registry=registry)
    (spec,) = bundle.manifest.inputs
    assert (spec.name, spec.datatype, spec.shape) == ("x", "FP32", (-1, 3))
    assert bundle.manifest.extra["dims"]["x"] == {"0": "N"}
    assert bundle.manifest.task == "generic"
    x = np.ones((4, 3), np.float32)
    with Client(edge=Local(registry)) as client:
        out = client.predict("linear", x).outputs
    np.testing.assert_allclose(out["y"], x @ w, atol=1e-6)


def test_import_onnx_keeps_external_data_as_an_artifact(tmp_path: Path) -> None:
    big = np.random.default_rng(0).normal(size=(3, 600)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 600])],
        [numpy_helper.from_array(big, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin")
    assert (tmp_path / "ext.bin").is_file()
    bundle = import_onnx(
        tmp_path / "ext.onnx", ImportConfig(name="ext"), registry=Registry(tmp_path / "r")
    )
    assert bundle.manifest.metrics["model.onnx"]["parity"]["max_abs_diff"] == 0.0


def test_import_module_names_outputs_and_survives_an_exporter_name_collision(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "reg")
    config = ImportConfig(name="embedder", task="embedding", output_names=("embedding",))
    bundle = import_module(Embedder(), token_examples(), config, registry=registry)
    assert [o.name for o in bundle.manifest.outputs] == ["embedding"]
    session = ort.InferenceSession(str(bundle.path_of("model.onnx")))
    ids = token_examples(3, 11)
    (got,) = session.run(["embedding"], ids)
    with torch.inference_mode():
        want = Embedder()(**{k: torch.from_numpy(v) for k, v in ids.items()}).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tuple_outputs_are_gated_one_by_one_and_named(tmp_path: Path) -> None:
    bundle = import_module(
        Pair(),
        {"x": np.ones((2, 3), np.float32)},
        ImportConfig(name="pair"),
        registry=Registry(tmp_path / "reg"),
    )
    parity = bundle.manifest.metrics["model.onnx"]["parity"]
    assert set(parity["outputs"]) == {"output_0", "output_1"}
    assert [p["x"][0] for p in parity["probes"]] == [1, 3]


def test_the_gate_names_the_output_that_disagrees() -> None:
    probes = probe_inputs({"x": np.ones((2, 3), np.float32)}, {"x": {0: "batch"}})

    def reference(inputs):
        return [inputs["x"], inputs["x"].sum(1)]

    def candidate(inputs):
        return [inputs["x"], inputs["x"].sum(1) + 1e-3]

    with pytest.raises(ParityError, match="output 'total'") as info:
        gate_outputs(reference, candidate, probes, ["same", "total"], atol=1e-4)
    assert info.value.output == "total"
    assert info.value.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_probes_cover_two_batch_sizes_and_two_sequence_lengths() -> None:
    probes = probe_inputs(
        token_examples(2, 8), {n: {0: "batch", 1: "seq"} for n in token_examples()}
    )
    shapes = sorted(tuple(p["input_ids"].shape) for p in probes)
    assert shapes == [(1, 4), (1, 8), (3, 4), (3, 8)]
    assert all(p["input_ids"].shape == p["attention_mask"].shape for p in probes)


def test_dynamic_spec_parses_and_rejects_garbage() -> None:
    assert parse_dynamic(["input_ids=0:batch,1:seq"]) == {"input_ids": {0: "batch", 1: "seq"}}
    with pytest.raises(ConfigError, match="AXIS:DIM"):
        parse_dynamic(["input_ids=batch"])


def test_forward_needing_more_inputs_than_given_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs inputs \['input_ids', 'attention_mask'\]"):
        import_module(
            Embedder(),
            {"input_ids": token_examples()["input_ids"]},
            ImportConfig(name="e"),
            registry=Registry(tmp_path / "reg"),
        )


def test_unknown_task_and_wrong_label_count_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task must be one of"):
        ImportConfig(name="x", task="segmentation")
    write_linear_onnx(tmp_path / "linear.onnx")
    config = ImportConfig(name="x", task="classification", labels=("a", "b", "c"))
    with pytest.raises(ConfigError, match="3 labels but output 'y' has 2 classes"):
        import_onnx(tmp_path / "linear.onnx", config, registry=Registry(tmp_path / "reg"))


class NotExportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x)[1]  # no ONNX op for SVD in either exporter


def test_both_exporters_failing_shows_the_dynamo_error_first(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        import_module(
            NotExportable(),
            {"x": np.random.default_rng(0).random((3, 3), dtype=np.float32)},
            ImportConfig(name="bad"),
            registry=Registry(tmp_path / "reg"),
        )
    message = str(info.value)
    assert message.startswith("the dynamo ONNX exporter failed:")
    assert "svd" in message.split("the legacy ONNX exporter failed too")[0].lower()
    assert "the legacy ONNX exporter failed too" in message


def test_rename_outputs_moves_a_colliding_internal_value_aside() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["embedding"]),
            helper.make_node("Neg", ["embedding"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rename_outputs(model, ["embedding"])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString())
    (y,) = session.run(["embedding"], {"x": np.asarray([-1.0, 2.0], np.float32)})
    assert y.tolist() == [-0.0, -2.0]


def test_preprocessing_bakes_uint8_nhwc_into_an_onnx_file(tmp_path: Path) -> None:
    conv = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0)],
        "pool",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(conv, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "pool.onnx"))
    recipe = Preprocessing(layout="NHWC", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    bundle = import_onnx(
        tmp_path / "pool.onnx",
        ImportConfig(name="pool", preprocessing=recipe),
        registry=Registry(tmp_path / "reg"),
    )
    (wire,) = bundle.manifest.inputs
    assert (wire.datatype, wire.shape) == ("UINT8", (-1, 8, 8, 3))
    pixels = np.full((1, 8, 8, 3), 255, np.uint8)
    session = ort.InferenceSession(str(bundle.path_of("model.onnx")))
    (got,) = session.run(None, {"image": pixels})
    np.testing.assert_allclose(got, [[2.0, 1.0, 0.5]], atol=1e-6)
    assert bundle.manifest.metrics["model.onnx"]["parity"]["reference"].endswith("preprocessing")


def test_preprocessing_with_unknown_keys_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown preprocessing key"):
        Preprocessing.from_dict({"layout": "NHWC", "resize": 224})


def test_strato_import_cli_with_a_module_and_json_output(tmp_path: Path) -> None:
    np.savez(tmp_path / "ex.npz", **token_examples())
    (tmp_path / "usermodels.py").write_text(
        "from test_import import Embedder\nencoder = Embedder()\n"
    )
    paths = [str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": ":".join(paths)}
    done = subprocess.run(
        [
            STRATO,
            "import",
            "usermodels:encoder",
            "--example",
            str(tmp_path / "ex.npz"),
            "--name",
            "enc",
            "--task",
            "embedding",
            "--dynamic",
            "input_ids=0:batch,1:seq",
            "--dynamic",
            "attention_mask=0:batch,1:seq",
            "--output-names",
            "vector",
            "--registry",
            str(tmp_path / "reg"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["ref"] == "enc:1"
    assert [o["name"] for o in answer["outputs"]] == ["vector"]
    assert answer["parity"]["outputs"]["vector"]["max_abs_diff"] <= 1e-4


def test_strato_import_cli_refuses_a_module_without_examples(tmp_path: Path) -> None:
    done = subprocess.run(
        [STRATO, "import", "json:loads", "--name", "x", "--registry", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "needs --example" in done.stderr
    assert "Traceback" not in done.stderr


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # type: ignore[no-any-return]


def test_strato_import_then_optimizes_on_the_users_rows(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    np.savez(tmp_path / "ex.npz", features=rows[:4])
    np.savez(tmp_path / "rows.npz", features=rows)
    (tmp_path / "wide.py").write_text("from test_import import Wide\n")
    paths = [str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(
        [
            STRATO,
            "import",
            "wide:Wide",
            "--example",
            str(tmp_path / "ex.npz"),
            "--name",
            "wide",
            "--task",
            "regression",
            "--optimize-data",
            str(tmp_path / "rows.npz"),
            "--registry",
            str(tmp_path / "reg"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ":".join(paths)},
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["ref"] == "wide:1" and answer["optimize"]["ref"] == "wide:2"
    manifest = Registry(tmp_path / "reg").manifest("wide:2")
    assert manifest.task == "regression" and manifest.extra["parent"] == "wide:1"
    assert manifest.serving["default"] == answer["optimize"]["default"]


def test_a_hugging_face_model_output_becomes_named_outputs(tmp_path: Path) -> None:
    """BertModel itself (no wrapper) returns a ModelOutput: each field is an output."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    bundle = import_module(
        BertModel(config).eval(),
        token_examples(2, 6),
        ImportConfig(name="bert"),
        registry=Registry(tmp_path / "reg"),
    )
    outputs = {o.name: o.shape for o in bundle.manifest.outputs}
    assert outputs == {"last_hidden_state": (-1, -1, 16), "pooler_output": (-1, 16)}
    parity = bundle.manifest.metrics["model.onnx"]["parity"]
    assert all(o["max_abs_diff"] <= 1e-4 for o in parity["outputs"].values())
    assert len(parity["probes"]) == 4


def test_preprocessing_nchw_and_the_inverse_for_a_float_split() -> None:
    from strato_training.graph import to_raw

    recipe = Preprocessing(layout="NCHW", dtype="uint8", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 2.0))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4)).astype(np.uint8)
    x = recipe.apply(pixels)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 2], (pixels[:, 2] / 255 - 0.3) / 2.0, atol=1e-6)
    assert np.array_equal(to_raw(recipe, x), pixels)
    nhwc = Preprocessing(layout="NHWC")
    assert to_raw(nhwc, nhwc.apply(pixels.transpose(0, 2, 3, 1))).shape == (2, 4, 4, 3)
