"""Any model in, every tier out: each model kind goes import → bundle → the edge daemon → the
Lambda emulator → `strato.Client`, and every output of every tier matches the model it came
from (torch, or the ONNX file) within 1e-4.

Models are built in code (tests/e2e/any_models.py): a BERT-style encoder with two INT64 inputs
and dynamic batch + sequence axes, a 3x224x224 CNN (float, and uint8 NHWC with preprocessing
baked into the graph), a regressor, a two-output MLP, an MLP trained by `strato train` on a
tabular npz, and an `onnx.helper` graph with INT64 and BOOL inputs and outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import any_models
import numpy as np
import pytest
import torch
from strato import Client, Edge, Lambda, Local, Registry
from strato_training import ImportConfig, Preprocessing, import_module, import_onnx
from support.servers import Proc, cloud_emulator, edge_server, free_port

pytestmark = pytest.mark.timeout(600)

ATOL = 1e-4
Arrays = dict[str, np.ndarray]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Case:
    name: str
    calls: list[Arrays]  # two requests, of different batch sizes / sequence lengths
    reference: Callable[[Arrays], Arrays]


def torch_reference(module: torch.nn.Module, names: list[str] | None = None) -> Callable:
    def run(inputs: Arrays) -> Arrays:
        with torch.inference_mode():
            result = module(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        if isinstance(result, dict):
            return {k: v.numpy() for k, v in result.items()}
        return {(names or ["output"])[0]: result.numpy()}

    return run


def onnx_reference(path: Path) -> Callable:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, inputs), strict=True))


def _encoder(registry: Registry) -> Case:
    module = any_models.SentenceEncoder().eval()
    config = ImportConfig(name="encoder", task="embedding", output_names=("sentence_embedding",))
    import_module(module, any_models.encoder_inputs(2, 9), config, registry=registry)
    calls = [any_models.encoder_inputs(2, 5, seed=1), any_models.encoder_inputs(3, 12, seed=2)]
    return Case("encoder", calls, torch_reference(module, ["sentence_embedding"]))


def _images(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.random((batch, 3, 224, 224), dtype=np.float32)


def _cnn(registry: Registry) -> Case:
    module = any_models.ImageCNN().eval()
    rng = np.random.default_rng(0)
    config = ImportConfig(name="cnn", task="classification", labels=tuple("abcdefghij"))
    import_module(module, {"image": _images(rng, 2)}, config, registry=registry)
    return Case(
        "cnn", [{"image": _images(rng, 1)}, {"image": _images(rng, 2)}], torch_reference(module)
    )


def _cnn_uint8(registry: Registry) -> Case:
    module = any_models.ImageCNN().eval()
    recipe = Preprocessing(layout="NHWC", dtype="uint8", mean=MEAN, std=STD)
    rng = np.random.default_rng(1)

    def pixels(batch: int) -> Arrays:
        return {"image": rng.integers(0, 256, (batch, 224, 224, 3)).astype(np.uint8)}

    config = ImportConfig(name="cnn-uint8", task="classification", preprocessing=recipe)
    import_module(module, pixels(2), config, registry=registry)
    reference = torch_reference(module)
    return Case(
        "cnn-uint8",
        [pixels(1), pixels(3)],
        lambda inputs: reference({"image": recipe.apply(inputs["image"])}),
    )


def _regressor(registry: Registry) -> Case:
    module = any_models.Regressor().eval()
    rng = np.random.default_rng(2)

    def rows(batch: int) -> Arrays:
        return {"features": rng.standard_normal((batch, 6)).astype(np.float32) * 5}

    config = ImportConfig(name="regressor", task="regression", output_names=("price",))
    import_module(module, rows(4), config, registry=registry)
    return Case("regressor", [rows(1), rows(7)], torch_reference(module, ["price"]))


def _two_heads(registry: Registry) -> Case:
    module = any_models.TwoHeads().eval()
    rng = np.random.default_rng(3)

    def rows(batch: int) -> Arrays:
        return {"x": rng.standard_normal((batch, 8)).astype(np.float32)}

    import_module(module, rows(4), ImportConfig(name="two-heads"), registry=registry)
    return Case("two-heads", [rows(2), rows(5)], torch_reference(module))


def _helper_onnx(registry: Registry, root: Path) -> Case:
    path = root / "helper.onnx"
    any_models.write_helper_onnx(path)
    import_onnx(path, ImportConfig(name="helper"), registry=registry)
    calls = [any_models.helper_inputs(2, 3, seed=1), any_models.helper_inputs(4, 9, seed=2)]
    return Case("helper", calls, onnx_reference(path))


def _tabular(registry: Registry, root: Path) -> Case:
    """`strato train` on a tabular npz (negative values kept), exported, published."""
    from strato_training.pipeline import evaluate_run, export_run
    from strato_training.publish import PublishConfig, publish
    from strato_training.trainer import TrainConfig, train

    rng = np.random.default_rng(5)
    x = rng.standard_normal((240, 5)).astype(np.float32) * 3
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    np.savez(root / "tabular.npz", x=x, y=y)
    config = TrainConfig(dataset=f"npz:{root / 'tabular.npz'}", epochs=3, threads=1, patience=0)
    result = train(config, out_dir=root / "tab-run", progress=False)
    evaluate_run(root / "tab-run", result=result)
    export_run(root / "tab-run", result=result)
    publish(root / "tab-run", PublishConfig("tabular"), registry=registry)
    model = result.model.eval()

    def reference(inputs: Arrays) -> Arrays:
        with torch.inference_mode():
            return {"logits": model(torch.from_numpy(inputs["input"])).numpy()}

    return Case("tabular", [{"input": x[:3]}, {"input": -np.abs(x[3:9])}], reference)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, dict[str, Case]]:
    root = tmp_path_factory.mktemp("any-model")
    registry = Registry(root / "registry")
    cases = [
        _encoder(registry),
        _cnn(registry),
        _cnn_uint8(registry),
        _regressor(registry),
        _two_heads(registry),
        _helper_onnx(registry, root),
        _tabular(registry, root),
    ]
    return registry, {case.name: case for case in cases}


@pytest.fixture(scope="module")
def edge(imported, tmp_path_factory: pytest.TempPathFactory):
    registry, _ = imported
    log = tmp_path_factory.mktemp("any-edge") / "edge.log"
    proc = edge_server(Path(registry.url), free_port(), log).start()
    yield proc
    proc.stop()


PARITY: dict[str, dict[str, float]] = {}


def _check(case: Case, tier: str, prediction_outputs: Arrays, inputs: Arrays) -> None:
    expected = case.reference(inputs)
    assert set(prediction_outputs) == set(expected), tier
    for name, want in expected.items():
        got = prediction_outputs[name]
        assert got.shape == want.shape, (tier, name)
        assert got.dtype == want.dtype, (tier, name)
        if want.dtype.kind in "f":
            diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
        else:
            diff = float((got != want).sum())
        key = f"{case.name}.{name}"
        PARITY.setdefault(key, {})[tier] = max(diff, PARITY.get(key, {}).get(tier, 0.0))
        assert diff <= ATOL, f"{tier} {case.name}.{name}: max |diff| {diff:.3g}"


@pytest.mark.parametrize(
    "name", ["encoder", "cnn", "cnn-uint8", "regressor", "two-heads", "helper", "tabular"]
)
def test_every_tier_answers_every_output_like_the_source_model(
    name: str, imported, edge: Proc, tmp_path: Path
) -> None:
    registry, cases = imported
    case = cases[name]
    cloud = cloud_emulator(f"{registry.url}/{name}:1", free_port(), tmp_path / "cloud.log").start()
    clients = {
        "local": Client(edge=Local(registry)),
        "edge-binary": Client(edge=Edge(edge.url)),
        "edge-json": Client(edge=Edge(edge.url, binary=False)),
        "lambda-invoke": Client(cloud=Lambda("strato-infer", endpoint_url=cloud.url)),
        "lambda-http": Client(cloud=Lambda(http_url=cloud.url)),
    }
    try:
        for inputs in case.calls:
            for tier, client in clients.items():
                prediction = client.predict(name, inputs)
                assert prediction.model_version == "1"
                _check(case, tier, prediction.outputs, inputs)
    finally:
        for client in clients.values():
            client.close()
        cloud.stop()
    manifest = registry.manifest(f"{name}:1")
    if "parity" in manifest.metrics.get("model.onnx", {}):
        gate = manifest.metrics["model.onnx"]["parity"]
        outputs = gate["outputs"] if "outputs" in gate else {gate["output"]: gate}
        assert set(outputs) == {o.name for o in manifest.outputs} or "output" in gate
        assert all(o["max_abs_diff"] <= ATOL for o in outputs.values())
    gate = manifest.metrics.get("model.onnx", {}).get("parity", {})
    tiers = {k: v for k, v in PARITY.items() if k.startswith(f"{name}.")}
    print(
        json.dumps({"tiers": tiers, "import_gate": gate.get("outputs", gate.get("max_abs_diff"))})
    )


def test_the_encoder_manifest_records_names_dims_and_parity_per_output(imported) -> None:
    registry, _ = imported
    manifest = registry.manifest("encoder:1")
    assert manifest.task == "embedding"
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("input_ids", "INT64", (-1, -1)),
        ("attention_mask", "INT64", (-1, -1)),
    ]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("sentence_embedding", (-1, 32))]
    assert manifest.extra["dims"]["input_ids"] == {"0": "batch", "1": "seq"}
    parity = manifest.metrics["model.onnx"]["parity"]
    assert parity["reference"] == "torch"
    shapes = {tuple(p["input_ids"]) for p in parity["probes"]}
    assert {s[0] for s in shapes} == {1, 3} and len({s[1] for s in shapes}) == 2
    assert manifest.framework["exporter"] == "dynamo"


def test_the_uint8_bundle_records_both_signatures(imported) -> None:
    registry, _ = imported
    manifest = registry.manifest("cnn-uint8:1")
    (wire,) = manifest.inputs
    assert (wire.name, wire.datatype, wire.shape) == ("image", "UINT8", (-1, 224, 224, 3))
    (model_input,) = manifest.extra["model_signature"]["inputs"]
    assert model_input == {"name": "image", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    assert manifest.preprocessing["baked"] is True
    assert manifest.preprocessing["mean"] == list(MEAN)


def _strato(*args: str):
    import subprocess

    from support.servers import STRATO

    return subprocess.run([STRATO, *args], capture_output=True, text=True, timeout=120, check=False)


def test_cli_predicts_map_npz_arrays_to_inputs_by_name(imported, edge: Proc, tmp_path: Path):
    registry, cases = imported
    case = cases["encoder"]
    inputs = case.calls[1]
    np.savez(
        tmp_path / "sentences.npz",
        attention_mask=inputs["attention_mask"],
        **{"input_ids": inputs["input_ids"]},
    )
    expected = case.reference(inputs)["sentence_embedding"]
    for args in (
        ("predict", "encoder", "-i", str(tmp_path / "sentences.npz"), "-r", registry.url, "--json"),
        ("predict", "encoder", "-i", str(tmp_path / "sentences.npz"), "--url", edge.url, "--json"),
        (
            "edge",
            "predict",
            "encoder",
            "-i",
            str(tmp_path / "sentences.npz"),
            "--url",
            edge.url,
            "--json",
        ),
    ):
        done = _strato(*args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        got = np.asarray(json.loads(done.stdout)["outputs"]["sentence_embedding"], np.float32)
        assert np.abs(got - expected).max() <= ATOL, args
    np.save(tmp_path / "ids.npy", inputs["input_ids"])
    refused = _strato(
        "edge", "predict", "encoder", "-i", str(tmp_path / "ids.npy"), "--url", edge.url
    )
    assert refused.returncode == 2
    assert "takes 2 inputs" in refused.stderr and "Traceback" not in refused.stderr
    np.savez(tmp_path / "ids.npz", input_ids=inputs["input_ids"])
    partial = _strato(
        "edge", "predict", "encoder", "-i", str(tmp_path / "ids.npz"), "--url", edge.url
    )
    assert partial.returncode == 2
    assert "the model takes ['input_ids', 'attention_mask']" in partial.stderr
