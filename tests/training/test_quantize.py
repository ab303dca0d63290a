"""Quantization on digits: recipes, the classification gate, QuantizationError, fp16, the default;
two-input models from --data, ORT temp files kept out of the cwd, the per-layer search, aliases."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from strato import Bundle, QuantizationError, Registry, TensorSpec
from strato._bundle import make_bundle
from strato._cli import app
from strato._engines import load_engine
from strato_training.data import Dataset
from strato_training.optimize import optimize_bundle, quantize_bundle
from strato_training.quantize import pick_default
from typer.testing import CliRunner


def write_mlp(path: Path, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
    """An MLP ONNX (Flatten → Gemm/Relu … → logits) with a dynamic batch axis."""
    nodes = [helper.make_node("Flatten", ["input"], ["h0"], axis=1)]
    inits = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        out = "logits" if last else f"g{i + 1}"
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"w{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def publish_mlp(
    registry: Registry,
    root: Path,
    name: str,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    labels: tuple[str, ...],
) -> None:
    root.mkdir(parents=True)
    write_mlp(root / "model.onnx", weights, biases)
    bundle = make_bundle(
        root,
        name=name,
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=labels,
        opset=17,
    )
    registry.publish(bundle)


@pytest.fixture(scope="module")
def mlp_weights(digits: Dataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 60 iterations are plenty here
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0)
        clf.fit(digits.train.x.reshape(len(digits.train), -1), digits.train.y)
    return list(clf.coefs_), list(clf.intercepts_)


@pytest.fixture
def mlp_registry(tmp_path: Path, mlp_weights: Any, digits: Dataset) -> Registry:
    registry = Registry(tmp_path / "registry")
    publish_mlp(registry, tmp_path / "src", "digits-mlp", *mlp_weights, digits.labels)
    return registry


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_optimize_bundle_publishes_gated_int8_with_calibration(
    mlp_registry: Registry, digits: Dataset
) -> None:
    ref, summary = optimize_bundle(
        mlp_registry, "digits-mlp:1", digits, modes=("int8-static",), alias="prod"
    )
    assert str(ref) == "digits-mlp:2"
    assert str(mlp_registry.resolve("digits-mlp@prod")) == "digits-mlp:2"
    bundle = mlp_registry.open(ref)
    manifest = bundle.manifest
    paths = {a.path: a for a in manifest.artifacts}
    qdq, qop = paths["model.int8.qdq.onnx"], paths["model.int8.qoperator.onnx"]
    assert (qdq.precision, qdq.format, qop.precision, qop.format) == (
        "int8",
        "qdq",
        "int8",
        "qoperator",
    )
    assert "QuantizeLinear" in op_types(bundle.path_of(qdq))
    assert op_types(bundle.path_of(qop)) & {"QGemm", "QLinearMatMul", "MatMulInteger"}
    fp32 = manifest.metrics["model.onnx"]
    assert fp32["accuracy"] > 0.9
    for path in ("model.int8.qdq.onnx", "model.int8.qoperator.onnx"):
        found = manifest.metrics[path]
        assert found["size_ratio"] <= 0.3
        assert found["size"] == paths[path].size
        assert found["accuracy_drop_points"] <= 1.0 and found["gate"] == "passed"
        assert found["agreement"] >= 0.97
        assert found["latency"]["p50_ms"] > 0
    default = manifest.serving["default"]
    assert default in paths
    assert manifest.metrics[default]["latency"]["p50_ms"] <= fp32["latency"]["p50_ms"]
    assert summary["default"] == default
    assert set(manifest.calibration) >= {
        "temperature",
        "ece_before",
        "ece_after",
        "cascade_threshold",
        "edge_share",
    }
    # Calibrated on what the edge serves, not on fp32.
    assert manifest.calibration["artifact"] == default
    assert manifest.extra["parent"] == "digits-mlp:1"
    # The runtime serves the measured default, and picks int8 on request.
    assert load_engine(bundle, prefer_tensorrt=False).artifact.path == default
    engine = load_engine(bundle, precision="int8")
    logits = engine.infer({"input": digits.test.x[:8]})["logits"]
    assert logits.shape == (8, 10) and logits.dtype == np.float32


def sabotaged_weights(mlp_weights: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same MLP plus one dead-weight hidden unit that always outputs 1e4: the int8
    activation range of the hidden layer then spans 0..1e4 and the real units round to 0."""
    (w1, w2), (b1, b2) = mlp_weights
    w1 = np.concatenate([w1, np.zeros((w1.shape[0], 1))], axis=1)
    b1 = np.append(b1, 1e4)
    w2 = np.concatenate([w2, np.zeros((1, w2.shape[1]))], axis=0)
    return [w1, w2], [b1, b2]


def test_accuracy_gate_refuses_a_model_int8_breaks(
    tmp_path: Path, mlp_weights: Any, digits: Dataset
) -> None:
    registry = Registry(tmp_path / "registry")
    publish_mlp(
        registry, tmp_path / "src", "fragile", *sabotaged_weights(mlp_weights), digits.labels
    )
    with pytest.raises(
        QuantizationError, match=r"model\.int8\.(qdq|qoperator)\.onnx .* classification gate"
    ) as caught:
        quantize_bundle(registry, "fragile:1", digits, max_drop=1.0, modes=("int8-static",))
    assert registry.versions("fragile") == ["1"]  # nothing published
    error = caught.value
    assert error.recipe in ("qdq", "qoperator") and error.output == "logits"
    assert error.figure in ("accuracy_drop_points", "agreement") and error.row is not None

    ref, summary = quantize_bundle(
        registry, "fragile:1", digits, force=True, modes=("int8-static",)
    )
    failed = [p for p, m in summary["artifacts"].items() if m.get("gate") == "failed"]
    assert failed
    assert registry.manifest(ref).serving["default"] not in failed


def test_tiny_max_drop_is_enforced(mlp_registry: Registry, digits: Dataset) -> None:
    with pytest.raises(QuantizationError, match=r"need <= -5"):
        quantize_bundle(
            mlp_registry, "digits-mlp:1", digits, max_drop=-5.0, modes=("int8-dynamic",)
        )


def test_fp16_artifact_runs_in_onnx_runtime_with_fp32_io(
    mlp_registry: Registry, digits: Dataset
) -> None:
    ref, summary = quantize_bundle(mlp_registry, "digits-mlp:1", digits, modes=("fp16",))
    bundle = Bundle.load(mlp_registry.open(ref).root)
    artifact = bundle.manifest.artifact("model.fp16.onnx")
    assert artifact.precision == "fp16"
    assert 0.4 < summary["artifacts"]["model.fp16.onnx"]["size_ratio"] < 0.6
    assert summary["artifacts"]["model.fp16.onnx"]["agreement"] >= 0.99
    engine = load_engine(bundle, precision="fp16")
    assert engine.artifact.path == "model.fp16.onnx"
    out = engine.infer({"input": digits.test.x[:4]})["logits"]
    assert out.dtype == np.float32
    reference = load_engine(bundle, precision="fp32").infer({"input": digits.test.x[:4]})["logits"]
    np.testing.assert_allclose(out, reference, atol=0.05, rtol=0.02)


def test_dynamic_int8_artifact(mlp_registry: Registry, digits: Dataset) -> None:
    ref, summary = quantize_bundle(mlp_registry, "digits-mlp:1", digits, modes=("int8-dynamic",))
    found = summary["artifacts"]["model.int8.dynamic.onnx"]
    assert found["format"] == "dynamic" and found["size_ratio"] <= 0.3
    assert "DynamicQuantizeLinear" in op_types(
        mlp_registry.open(ref).path_of("model.int8.dynamic.onnx")
    )


def test_pick_default_never_serves_slower_failed_or_marginal_artifacts() -> None:
    def timing(ms: float) -> dict[str, float]:
        return {"p50_ms": ms, "p99_ms": ms, "batch": 32}

    latency = {
        "fp32": timing(1.0),
        "slow": timing(2.0),
        "fast_bad": timing(0.2),
        "tie": timing(0.98),
    }
    metrics = {
        "slow": {"gate": "passed"},
        "fast_bad": {"gate": "failed"},
        "tie": {"gate": "passed"},
    }
    assert pick_default("fp32", latency, metrics)[0] == "fp32"
    latency["good"] = timing(0.5)
    metrics["good"] = {"gate": "passed"}
    assert pick_default("fp32", latency, metrics) == (
        "good",
        "0.500 ms vs fp32 1.000 ms at batch 32",
    )


def test_unknown_mode_and_bad_samples_are_config_errors(
    mlp_registry: Registry, digits: Dataset
) -> None:
    from strato import ConfigError

    with pytest.raises(ConfigError, match="unknown quantization mode"):
        quantize_bundle(mlp_registry, "digits-mlp:1", digits, modes=("int4",))
    with pytest.raises(ConfigError, match="samples"):
        quantize_bundle(mlp_registry, "digits-mlp:1", digits, samples=0)


def test_strato_quantize_cli_json(mlp_registry: Registry) -> None:
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            "digits-mlp:1",
            "--mode",
            "int8-static",
            "--dataset",
            "digits",
            "--registry",
            mlp_registry.url,
            "--samples",
            "64",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["ref"] == "digits-mlp:2"
    assert {"model.onnx", "model.int8.qdq.onnx", "model.int8.qoperator.onnx"} <= set(
        printed["artifacts"]
    )


def test_strato_quantize_cli_table_shows_both_precisions(mlp_registry: Registry) -> None:
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            "digits-mlp:1",
            "--calibrate",
            "--dataset",
            "digits",
            "--registry",
            mlp_registry.url,
        ],
        env={"COLUMNS": "160"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.output and "int8/dynamic" in result.output
    assert "serving default" in result.output and "cascade threshold" in result.output


def test_report_json_of_a_published_run_gains_calibration_and_quantization(
    exported_run: Path, digits: Dataset, tmp_path: Path
) -> None:
    """A run published by `strato publish` carries report.json; the optimized version's copy
    records the temperature, ECE before/after and the per-artifact quantization metrics."""
    from strato_training.publish import PublishConfig, publish

    registry = Registry(tmp_path / "registry")
    source = publish(exported_run, PublishConfig("digits-mlp"), registry=registry).ref
    ref, summary = optimize_bundle(registry, source, digits)
    report = json.loads(registry.open(ref).path_of("report.json").read_text())
    assert report["calibration"]["temperature"] == summary["calibration"]["temperature"]
    assert {"ece_before", "ece_after"} <= set(report["calibration"])
    assert report["quantization"]["default"] == summary["default"]
    assert "model.int8.qdq.onnx" in report["quantization"]["artifacts"]
    original = json.loads(registry.open(source).path_of("report.json").read_text())
    assert "calibration" not in original and original["accuracy"] == report["accuracy"]


def test_auto_searches_per_layer_when_no_uniform_recipe_passes(
    tmp_path: Path, mlp_weights: Any, digits: Dataset
) -> None:
    """The sabotaged MLP: every uniform int8 recipe fails (the 1e4 unit wrecks the hidden
    layer's activation range); keeping the one layer that reads it in fp32 passes."""
    registry = Registry(tmp_path / "registry")
    publish_mlp(
        registry, tmp_path / "src", "fragile", *sabotaged_weights(mlp_weights), digits.labels
    )
    ref, summary = quantize_bundle(registry, "fragile:1", digits, samples=64)
    mixed = [p for p, m in summary["artifacts"].items() if m.get("fp32_layers")]
    assert mixed == ["model.int8.dynamic-mixed.onnx"]
    found = summary["artifacts"][mixed[0]]
    assert found["gate"] == "passed" and found["accuracy_drop_points"] <= 1.0
    assert found["fp32_layers"] == ["Gemm_3"]  # the second Gemm, which reads the outlier unit
    assert found["size_ratio"] < 0.7
    assert found["cost_vs_uniform"]["size_ratio"] > 1.0  # fp32 weights cost bytes
    assert found["search"]["trials"] <= 24
    # The failing uniform artifacts are refused, not published.
    assert {"model.int8.dynamic.onnx", "model.int8.qdq.onnx"} <= set(summary["refused"])
    published = {a.path for a in registry.manifest(ref).artifacts}
    assert mixed[0] in published and "model.int8.dynamic.onnx" not in published


def write_two_input(path: Path) -> Path:
    from quant_models import dense_layers, write_dense

    first = {"features": dense_layers(0, [6, 16])[0], "context": dense_layers(1, [4, 16])[0]}
    return write_dense(
        path,
        inputs={"features": 6, "context": 4},
        first=first,
        trunk=dense_layers(2, [16, 16]),
        heads={"score": dense_layers(3, [16, 3])[0]},
    )


def test_cli_quantizes_a_two_input_model_from_named_arrays_and_moves_the_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quant_models import publish_model

    registry = Registry(tmp_path / "registry")
    publish_model(
        registry,
        write_two_input(tmp_path / "two.onnx"),
        tmp_path / "src",
        name="two",
        task="classification",
    )
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rows.npz", features=rng.normal(size=(64, 6)), context=rng.normal(size=(64, 4))
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(
        app,
        ["quantize", "two:1", "--data", str(tmp_path / "rows.npz"), "--alias", "prod",
         "--registry", registry.url, "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["ref"] == "two:2" and printed["alias"] == "prod"
    assert str(registry.resolve("two@prod")) == "two:2"
    dynamic = printed["artifacts"]["model.int8.dynamic.onnx"]
    assert dynamic["gate"] == "passed" and dynamic["gate_samples"] == 32
    assert dynamic["agreement"] >= 0.97
    engine = load_engine(registry.open("two@prod"), precision="int8")
    out = engine.infer(
        {"features": np.zeros((2, 6), np.float32), "context": np.zeros((2, 4), np.float32)}
    )
    assert out["score"].shape == (2, 3)
    assert list(cwd.iterdir()) == []


def test_cli_names_the_missing_input(tmp_path: Path) -> None:
    from quant_models import publish_model

    registry = Registry(tmp_path / "registry")
    publish_model(
        registry,
        write_two_input(tmp_path / "two.onnx"),
        tmp_path / "src",
        name="two",
        task="generic",
    )
    np.savez(tmp_path / "rows.npz", features=np.zeros((8, 6)))
    run = subprocess.run(
        [sys.executable, "-c", "from strato._cli import main; main()", "quantize", "two:1",
         "--data", str(tmp_path / "rows.npz"), "--registry", registry.url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "missing ['context']" in run.stderr
    assert "Traceback" not in run.stderr


def test_symbolic_shape_failure_is_reported_and_leaves_nothing_in_the_cwd(
    mlp_registry: Registry, digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT's symbolic shape inference, when incomplete, saves sym_shape_infer_temp.onnx and
    a <uuid>.data into the working directory and raises: make it incomplete for real."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    monkeypatch.setattr(
        SymbolicShapeInference, "_infer_impl", lambda self: setattr(self, "run_", False)
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _, summary = quantize_bundle(mlp_registry, "digits-mlp:1", digits, modes=("int8-dynamic",))
    notes = summary["artifacts"]["model.int8.dynamic.onnx"]["notes"]
    assert "symbolic shape inference failed" in notes[0]
    assert list(cwd.iterdir()) == []


def test_a_recipe_that_cannot_run_is_a_typed_error_naming_the_recipe(
    tmp_path: Path, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "registry")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"not an onnx graph")
    registry.publish(
        make_bundle(
            src, name="broken", version="1",
            inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
            outputs=[TensorSpec("logits", "FP32", (-1, 10))],
            artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        )
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    with pytest.raises(Exception) as caught:
        quantize_bundle(registry, "broken:1", digits, modes=("int8-dynamic",))
    from strato import StratoError

    assert isinstance(caught.value, StratoError)
    assert set(tmp_path.iterdir()) == before


def test_cli_on_a_trained_run_uses_the_dataset_it_records(
    exported_run: Path, tmp_path: Path
) -> None:
    """`strato publish` records the training dataset: `strato quantize REF` needs no --data."""
    from strato_training.publish import PublishConfig, publish

    registry = Registry(tmp_path / "registry")
    publish(exported_run, PublishConfig("digits-mlp", alias="prod"), registry=registry)
    result = CliRunner().invoke(
        app,
        ["quantize", "digits-mlp@prod", "--registry", registry.url, "--alias", "prod", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["data"]["source"] == "dataset" and printed["task"] == "classification"
    assert printed["artifacts"]["model.onnx"]["accuracy"] > 0.9
    assert str(registry.resolve("digits-mlp@prod")) == "digits-mlp:2"


def test_data_of_the_wrong_kind_for_an_input_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """An int64 input (token ids) fed float data: refused before ORT sees it."""
    from quant_models import publish_model
    from strato import ConfigError
    from strato_training.quantize_data import QuantizeData

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("MatMul", ["f", "w"], ["out"], name="mm"),
        ],
        "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "ids.onnx"))
    registry = Registry(tmp_path / "registry")
    publish_model(registry, tmp_path / "ids.onnx", tmp_path / "src", name="ids", task="generic")
    data = QuantizeData.from_arrays({"ids": np.random.default_rng(0).normal(size=(30, 4))})
    with pytest.raises(ConfigError, match=r"input 'ids' is tensor\(int64\) in the model"):
        quantize_bundle(registry, "ids:1", data=data)
    ints = QuantizeData.from_arrays({"ids": np.arange(120).reshape(30, 4)})
    _, summary = quantize_bundle(registry, "ids:1", data=ints, modes=("int8-dynamic",))
    assert summary["artifacts"]["model.int8.dynamic.onnx"]["gate_task"] == "generic"


def test_optimize_without_labels_quantizes_and_skips_calibration(tmp_path: Path) -> None:
    from quant_models import publish_model
    from strato_training.quantize_data import QuantizeData

    registry = Registry(tmp_path / "registry")
    publish_model(
        registry, write_two_input(tmp_path / "two.onnx"), tmp_path / "src", name="two",
        task="classification",
    )  # fmt: skip
    rng = np.random.default_rng(1)
    rows = {"features": rng.normal(size=(40, 6)), "context": rng.normal(size=(40, 4))}
    _, summary = optimize_bundle(registry, "two:1", data=QuantizeData.from_arrays(rows))
    assert "calibration" not in summary and summary["artifacts"]
    from strato import ConfigError

    with pytest.raises(ConfigError, match="--targets"):
        optimize_bundle(registry, "two:1", data=QuantizeData.from_arrays(rows), calibrate=True)


@pytest.mark.parametrize("mode", ["int8-static", "int8-dynamic", "fp16"])
def test_a_relative_registry_path_quantizes(
    tmp_path: Path, mlp_weights: Any, digits: Dataset, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """ORT's tools run in a scratch folder: relative paths must not reach them."""
    monkeypatch.chdir(tmp_path)
    registry = Registry("reg")
    publish_mlp(registry, Path("src"), "digits-mlp", *mlp_weights, digits.labels)
    _, summary = quantize_bundle(registry, "digits-mlp:1", digits, modes=(mode,), samples=32)
    assert all(m["gate"] == "passed" for p, m in summary["artifacts"].items() if p != "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg", "src"]


def test_a_recipe_that_fails_in_ort_names_the_recipe_and_the_node(tmp_path: Path) -> None:
    """A graph with a hard-coded Reshape to 4 rows: the gate rows (4) run, calibration batches
    (30 rows) make ORT fail inside that node while static quantization calibrates."""
    from quant_models import publish_model
    from strato_training.quantize_data import QuantizeData

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="fixed_reshape"),
            helper.make_node("MatMul", ["r", "w"], ["y"], name="mm"),
        ],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [
            numpy_helper.from_array(np.array([4, 6], np.int64), "shape"),
            numpy_helper.from_array(
                np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32), "w"
            ),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    registry = Registry(tmp_path / "registry")
    publish_model(registry, tmp_path / "fixed.onnx", tmp_path / "src", name="fixed", task="generic")
    rng = np.random.default_rng(1)
    data = QuantizeData(
        calibration={"x": rng.normal(size=(30, 6))}, gate={"x": rng.normal(size=(4, 6))}
    )
    with pytest.raises(QuantizationError, match=r"at Reshape node 'fixed_reshape'") as caught:
        quantize_bundle(registry, "fixed:1", data=data, modes=("int8-static",))
    assert caught.value.recipe == "qoperator" and caught.value.node == "fixed_reshape"
    # auto goes on without the recipe that cannot run, and says why it is missing.
    _, summary = quantize_bundle(registry, "fixed:1", data=data)
    assert "model.int8.dynamic.onnx" in summary["artifacts"]
    assert "fixed_reshape" in summary["refused"]["model.int8.qdq.onnx"]["error"]
    # It cannot take a batch of 32: timed at the 4 rows it showed it takes, not a crash.
    assert summary["artifacts"]["model.onnx"]["latency"]["batch"] == 4


def test_auto_with_no_recipe_that_runs_is_an_error_not_an_empty_version(tmp_path: Path) -> None:
    """A conv graph (auto: static QOperator + QDQ) with a hard-coded Reshape: calibration
    batches of 30 rows fail inside ORT for both recipes; nothing is published."""
    from quant_models import publish_model
    from strato_training.quantize_data import QuantizeData

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="fixed_reshape"),
            helper.make_node("Conv", ["r", "w"], ["y"], name="conv"),
        ],
        "fixed-conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2, 4, 4])],
        [
            numpy_helper.from_array(np.array([4, 1, 4, 4], np.int64), "shape"),
            numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "conv.onnx"))
    registry = Registry(tmp_path / "registry")
    publish_model(registry, tmp_path / "conv.onnx", tmp_path / "src", name="conv", task="generic")
    rng = np.random.default_rng(2)
    data = QuantizeData(
        calibration={"x": rng.normal(size=(30, 16))}, gate={"x": rng.normal(size=(4, 16))}
    )
    with pytest.raises(QuantizationError, match=r"no recipe could be built.*fixed_reshape"):
        quantize_bundle(registry, "conv:1", data=data)
    assert registry.versions("conv") == ["1"]
