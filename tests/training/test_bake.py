"""A trained image model with its preprocessing baked into the graph: the bundle takes raw uint8
NHWC pixels (4x fewer bytes than float32) on every tier, the parity gate ran through the baked
ops, and the manifest records both signatures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from strato import Client, Edge, Local, Registry
from strato_training.data import Dataset
from strato_training.graph import Preprocessing, to_raw
from strato_training.pipeline import evaluate_run, export_step, publish_step
from strato_training.trainer import TrainConfig, train
from support.servers import edge_server, free_port

RECIPE = Preprocessing(layout="NHWC", dtype="uint8")


@pytest.fixture(scope="module")
def baked(digits: Dataset, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bake")
    run = root / "run"
    config = TrainConfig(model="cnn", epochs=2, patience=0, threads=1)
    result = train(config, out_dir=run, dataset=digits, progress=False)
    evaluate_run(run, result=result, dataset=digits)
    exported = export_step(run, result, digits, preprocessing=RECIPE)
    registry = Registry(root / "registry")
    published = publish_step(run, "digits-uint8", registry)
    return result, exported, published, registry, run


def test_the_manifest_takes_uint8_nhwc_and_records_the_model_signature(baked) -> None:
    _, exported, published, _, run = baked
    manifest = published.bundle.manifest
    (wire,) = manifest.inputs
    assert (wire.name, wire.datatype, wire.shape) == ("input", "UINT8", (-1, 28, 28, 1))
    (native,) = manifest.extra["model_signature"]["inputs"]
    assert native == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert manifest.preprocessing["baked"] is True and manifest.preprocessing["layout"] == "NHWC"
    assert exported.parity.max_abs_diff <= 1e-4 and exported.parity.top1_agreement == 1.0
    assert json.loads((run / "export.json").read_text())["wire"]["inputs"][0]["datatype"] == "UINT8"


def test_every_tier_takes_raw_pixels_and_agrees_with_torch(baked, digits, tmp_path: Path):
    result, _, _, registry, _ = baked
    pixels = to_raw(RECIPE, digits.test.x[:16])
    assert pixels.nbytes * 4 == digits.test.x[:16].nbytes
    with torch.inference_mode():
        expected = result.model(torch.from_numpy(RECIPE.apply(pixels))).numpy()
    edge = edge_server(Path(registry.url), free_port(), tmp_path / "edge.log").start()
    try:
        for transport in (Local(registry), Edge(edge.url)):
            with Client(edge=transport) as client:
                got = client.predict("digits-uint8", pixels).output
            assert np.abs(got - expected).max() <= 1e-4, transport
    finally:
        edge.stop()


def test_strato_export_bakes_a_recipe_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    strato = str(Path(sys.executable).with_name("strato"))
    run = str(tmp_path / "run")
    recipe = tmp_path / "uint8.json"
    recipe.write_text(json.dumps({"layout": "NHWC", "dtype": "uint8"}))
    commands = [
        ["train", "--epochs", "1", "--threads", "1", "-q", "--out", run],
        ["export", run, "--preprocessing", str(recipe), "-q", "--json"],
        ["publish", run, "--name", "u8", "-r", str(tmp_path / "reg"), "--json"],
    ]
    for args in commands:
        done = subprocess.run([strato, *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    manifest = json.loads(done.stdout)["manifest"]
    assert manifest["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
