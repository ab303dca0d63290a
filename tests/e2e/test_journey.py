"""A new user's journey through real processes: `strato predict NAME:VERSION --url` against a
daemon, the Lambda emulator's `/predict` with named inputs, and the message for a reference
passed where a model name belongs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import any_models
import numpy as np
import pytest
from strato import Client, ConfigError, Lambda, Local, ModelNotFound, Registry, policies
from strato_training import ImportConfig, import_onnx
from support.servers import Proc, cloud_emulator, edge_server, free_port

STRATO = str(Path(sys.executable).with_name("strato"))


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc, Proc]]:
    """`helper:1` (x FP32, ids INT64, keep BOOL) on the edge daemon and the Lambda emulator."""
    root = tmp_path_factory.mktemp("journey")
    any_models.write_helper_onnx(root / "helper.onnx")
    registry = Registry(root / "registry")
    import_onnx(root / "helper.onnx", ImportConfig(name="helper"), registry=registry)
    np.savez(root / "rows.npz", **any_models.helper_inputs(3, 5))
    edge = edge_server(Path(registry.url), free_port(), root / "edge.log").start()
    cloud = cloud_emulator(f"{registry.url}/helper:1", free_port(), root / "cloud.log").start()
    yield root, edge, cloud
    edge.stop()
    cloud.stop()


def _strato(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRATO, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_predict_a_pinned_version_on_a_running_daemon(journey: tuple[Path, Proc, Proc]) -> None:
    root, edge, _ = journey
    done = _strato("predict", "helper:1", "-i", "rows.npz", "--url", edge.url, "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == "helper:1"
    assert np.asarray(answer["outputs"]["y"]).shape == (3, 3)


def test_an_alias_on_a_daemon_is_a_usage_error_without_traceback(
    journey: tuple[Path, Proc, Proc],
) -> None:
    root, edge, _ = journey
    done = _strato("predict", "helper@prod", "-i", "rows.npz", "--url", edge.url, cwd=root)
    assert done.returncode == 2
    assert "not aliases" in done.stderr and "helper:VERSION" in done.stderr
    assert "Traceback" not in done.stderr


def _post(url: str, document: object) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_lambda_predict_route_takes_named_inputs(journey: tuple[Path, Proc, Proc]) -> None:
    _, _, cloud = journey
    rows = any_models.helper_inputs(2, 4)
    status, answer = _post(
        f"{cloud.url}/predict", {"inputs": {k: v.tolist() for k, v in rows.items()}}
    )
    assert status == 200, answer
    outputs = answer["outputs"]
    assert isinstance(outputs, dict)
    kept = np.where(rows["keep"], rows["ids"], 0).sum(1)
    assert outputs["total"] == kept[:, None].tolist()
    assert outputs["dropped"] == (~rows["keep"]).tolist()


def test_lambda_predict_route_names_what_a_multi_input_body_lacks(
    journey: tuple[Path, Proc, Proc],
) -> None:
    _, _, cloud = journey
    rows = any_models.helper_inputs(2, 4)
    status, answer = _post(f"{cloud.url}/predict", {"inputs": rows["x"].tolist()})
    assert status == 400 and "send them by name" in str(answer["error"])
    named = {"x": rows["x"].tolist(), "ids": rows["ids"].tolist(), "extra": [1]}
    status, answer = _post(f"{cloud.url}/predict", {"inputs": named})
    assert status == 400
    assert "missing ['keep']" in str(answer["error"]) and "not inputs: ['extra']" in str(
        answer["error"]
    )


def test_a_reference_where_a_name_belongs_says_so(journey: tuple[Path, Proc, Proc]) -> None:
    _, _, cloud = journey
    with Client(cloud=Lambda(http_url=cloud.url)) as client, pytest.raises(ModelNotFound) as caught:
        client.predict("helper:1", any_models.helper_inputs(1, 2))
    message = str(caught.value)
    assert "serves helper:1" not in message  # it said "helper:1 is not served; serves helper:1"
    assert "version=" in message


def test_classify_and_cascade_on_an_embedding_model_read_as_english(tmp_path: Path) -> None:
    any_models.write_helper_onnx(tmp_path / "helper.onnx")
    registry = Registry(tmp_path / "registry")
    import_onnx(
        tmp_path / "helper.onnx", ImportConfig(name="vec", task="embedding"), registry=registry
    )
    rows = any_models.helper_inputs(2, 3)
    with Client(edge=Local(registry)) as client:
        with pytest.raises(ConfigError) as classify:
            client.classify("vec", rows)
        with pytest.raises(ConfigError) as cascade:
            client.predict("vec", rows, policy=policies.Cascade())
    from strato_training.optimize import calibrate_bundle

    with pytest.raises(ConfigError) as calibrate:
        calibrate_bundle(registry, "vec:1")
    assert "vec:1 is an embedding model" in str(calibrate.value)
    for caught in (classify, cascade):
        assert "a embedding" not in str(caught.value)  # was "vec is a embedding model"
        assert "task is 'embedding'" in str(caught.value)


def test_predict_against_no_daemon_says_what_to_start(tmp_path: Path) -> None:
    np.savez(tmp_path / "rows.npz", **any_models.helper_inputs(1, 2))
    url = f"http://127.0.0.1:{free_port()}"
    done = _strato("predict", "helper", "-i", "rows.npz", "--url", url, cwd=tmp_path)
    assert done.returncode == 1
    assert f"is `strato edge serve` running at {url}?" in done.stderr
    assert "Traceback" not in done.stderr


def test_edge_predict_names_the_missing_and_the_extra_arrays(
    journey: tuple[Path, Proc, Proc],
) -> None:
    root, edge, _ = journey
    rows = any_models.helper_inputs(2, 3)
    np.savez(root / "odd.npz", x=rows["x"], ids=rows["ids"], mask=rows["keep"])
    done = _strato("edge", "predict", "helper", "-i", "odd.npz", "--url", edge.url, cwd=root)
    assert done.returncode == 2
    assert "(missing ['keep']) (not inputs: ['mask'])" in done.stderr
    assert "Traceback" not in done.stderr
