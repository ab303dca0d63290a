"""Issue 10 item 3: eight real processes publish and promote at once, to a folder registry and to
S3 (moto's server, real boto3): every "ok" is a distinct, loadable version holding its own
publisher's bytes, and no alias update is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from strato import Registry, TensorSpec, VersionExists
from strato._bundle import make_bundle

pytestmark = pytest.mark.timeout(180)
WORKERS = 8

# Each worker waits for the start file, then publishes its bundle and moves two aliases.
WORKER = r"""
import json, os, sys, time
from pathlib import Path
from strato import Bundle, Registry, StratoError

url, folder, index, go, renumber = sys.argv[1:6]
client = None
if url.startswith("s3://"):
    import boto3
    client = boto3.client("s3", endpoint_url=os.environ["TEST_S3_ENDPOINT"])
registry = Registry(url, s3_client=client)
bundle = Bundle.load(folder)
while not Path(go).exists():
    time.sleep(0.001)
try:
    ref = registry.publish(bundle, renumber=True) if renumber == "1" else registry.publish(bundle)
except StratoError as exc:
    print(json.dumps({"index": index, "error": type(exc).__name__}))
    sys.exit(0)
registry.promote(ref.name, ref.version, "prod")
registry.promote(ref.name, ref.version, f"w{index}")
print(json.dumps({"index": index, "version": ref.version}))
"""


def _bundles(tmp_path: Path) -> list[Path]:
    """Eight bundles of `race:1`, each with an artifact naming its publisher."""
    folders = []
    for index in range(WORKERS):
        root = tmp_path / f"b{index}"
        root.mkdir(parents=True)
        (root / "owner.txt").write_text(str(index) * (1000 + index))
        make_bundle(
            root,
            name="race",
            version="1",
            inputs=[TensorSpec("x", "FP32", (-1, 2))],
            outputs=[TensorSpec("y", "FP32", (-1, 2))],
            artifacts=[{"path": "owner.txt"}],
        )
        folders.append(root)
    return folders


def _race(url: str, tmp_path: Path, *, renumber: bool, env: dict[str, str]) -> list[dict]:
    go = tmp_path / f"go-{renumber}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(folder), str(i), str(go), str(int(renumber))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for i, folder in enumerate(_bundles(tmp_path / f"src-{renumber}"))
    ]
    time.sleep(1.5)  # every worker has imported strato and is spinning on the start file
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _check_renumbered(registry: Registry, results: list[dict]) -> None:
    versions = {r["index"]: r["version"] for r in results}
    assert all("error" not in r for r in results), results
    assert sorted(versions.values(), key=int) == [str(v) for v in range(1, WORKERS + 1)]
    for index, version in versions.items():  # loadable, and holding its own publisher's bytes
        bundle = registry.open(f"race:{version}")
        assert bundle.path_of("owner.txt").read_text() == index * (1000 + int(index))
    aliases = registry.aliases("race")
    assert {a: v for a, v in aliases.items() if a != "prod"} == {
        f"w{i}": v for i, v in versions.items()
    }  # no alias update lost
    history = registry._alias_doc("race")["history"]["prod"]
    assert sorted(history, key=int) == sorted(versions.values(), key=int)
    assert aliases["prod"] == history[-1]


def _check_one_winner(registry: Registry, results: list[dict]) -> None:
    winners = [r for r in results if "version" in r]
    assert len(winners) == 1, results
    assert sorted(r.get("error", "") for r in results if "error" in r) == ["VersionExists"] * 7
    bundle = registry.open("race:1")  # the version holds the winner's artifact, not a mix
    index = winners[0]["index"]
    assert bundle.path_of("owner.txt").read_text() == index * (1000 + int(index))


def test_eight_processes_publish_to_a_folder_registry(tmp_path):
    other = Registry(tmp_path / "reg2")
    _check_one_winner(other, _race(other.url, tmp_path, renumber=False, env={}))
    registry = Registry(tmp_path / "reg")
    _check_renumbered(registry, _race(registry.url, tmp_path, renumber=True, env={}))
    for root in (tmp_path / "reg" / "race", tmp_path / "reg2" / "race"):
        assert not [p for p in root.iterdir() if p.name.startswith(".staging-")]


def test_eight_processes_publish_to_s3(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="race")
    env = {
        "TEST_S3_ENDPOINT": s3_client.meta.endpoint_url,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    other = Registry("s3://race/b", s3_client=s3_client, cache_dir=tmp_path / "cache")
    _check_one_winner(other, _race(other.url, tmp_path, renumber=False, env=env))
    registry = Registry("s3://race/a", s3_client=s3_client, cache_dir=tmp_path / "cache")
    _check_renumbered(registry, _race(registry.url, tmp_path, renumber=True, env=env))
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket="race").get("Contents", [])]
    assert not [k for k in keys if "/.staging/" in k]  # staged artifacts cleaned up


def test_a_signed_bundle_is_never_renumbered(tmp_path):
    from strato import Bundle
    from strato._signing import generate_keypair

    pair = generate_keypair(tmp_path / "keys")
    registry = Registry(tmp_path / "reg")
    first, second = _bundles(tmp_path / "src")[:2]
    registry.publish(Bundle.load(first))
    bundle = Bundle.load(second)
    bundle.sign(pair.private_path)
    with pytest.raises(VersionExists):
        registry.publish(bundle, renumber=True)  # its signature names version 1
