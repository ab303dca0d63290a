"""Issue 10 items 1, 2, 4: a hostile registry cannot write outside the store, not even with keys
set; a refused pull leaves no file anywhere; a manifest is only valid where it was published.

Folder registries and S3 (real boto3 against moto's server) go through the same download helper;
the Lambda S3 loader does too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from strato import IntegrityError, Registry, SignatureError, StratoError


def _root_conftest_helper(name: str):
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("strato_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


build_tiny_bundle = _root_conftest_helper("build_tiny_bundle")
PAYLOAD = b"#!/bin/sh\necho owned\n"


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    monkeypatch.delenv("STRATO_TRUSTED_KEYS", raising=False)


def _hostile_manifest(bundle, paths: list[str]) -> bytes:
    """The bundle's manifest plus artifacts at `paths` whose sha256/size match PAYLOAD."""
    raw = json.loads((bundle.root / "manifest.json").read_text())
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    for path in paths:
        raw["artifacts"].append({"path": path, "sha256": digest, "size": len(PAYLOAD)})
    return json.dumps(raw).encode()


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _hostile_folder_registry(tmp_path: Path, paths: list[str]) -> Registry:
    """A registry folder someone else controls: tiny:1's manifest names `paths`, and the files
    a naive `root/key/path` copy would read are there."""
    source = Registry(tmp_path / "src" / "reg")
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle)
    version = Path(source.url) / "tiny" / "1"
    for path in paths:
        planted = version / path.lstrip("/")  # where `root / f"{key}/{path}"` reads from
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_bytes(PAYLOAD)
    (version / "manifest.json").write_bytes(_hostile_manifest(bundle, paths))
    return source


@pytest.mark.parametrize("keys", [False, True], ids=["no-keys", "keys-set"])
def test_folder_pull_with_traversal_paths_writes_nothing_anywhere(tmp_path, keys, monkeypatch):
    device = tmp_path / "dev"
    absolute = device / "abs-planted.sh"
    paths = ["../../../victim/planted.sh", str(absolute)]
    source = _hostile_folder_registry(tmp_path, paths)
    if keys:
        from strato._signing import generate_keypair

        pair = generate_keypair(tmp_path / "keys")
        monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(pair.public_path))
    store = device / "store"
    with pytest.raises(SignatureError if keys else IntegrityError):
        source.download("tiny:1", store / "tiny" / "1")
    assert not (device / "victim").exists() and not absolute.exists()
    assert _files_under(device) == []  # not even the store's folders were left behind


def test_s3_pull_with_traversal_paths_writes_nothing_anywhere(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="hostile")
    source = Registry("s3://hostile/reg", s3_client=s3_client)
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle)
    device = tmp_path / "dev"
    absolute = device / "abs-planted.sh"
    paths = ["../../../victim/planted.sh", str(absolute)]
    for path in paths:
        s3_client.put_object(Bucket="hostile", Key=f"reg/tiny/1/{path}", Body=PAYLOAD)
    s3_client.put_object(
        Bucket="hostile", Key="reg/tiny/1/manifest.json", Body=_hostile_manifest(bundle, paths)
    )
    with pytest.raises(IntegrityError, match="escapes the bundle"):
        source.download("tiny:1", device / "store" / "tiny" / "1")
    assert _files_under(device) == []
    with pytest.raises(IntegrityError):  # Registry.open's cache goes the same way
        Registry("s3://hostile/reg", s3_client=s3_client, cache_dir=device / "cache").open("tiny:1")
    assert _files_under(device) == []


def test_lambda_s3_loader_refuses_traversal_without_keys(tmp_path, s3_client):
    loader = pytest.importorskip("strato_lambda.loader")
    from strato_lambda.settings import Settings

    s3_client.create_bucket(Bucket="hostile-lambda")
    source = Registry("s3://hostile-lambda/reg", s3_client=s3_client)
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle, alias="prod")
    cache = tmp_path / "tmp" / "strato-models"
    path = "../../../../planted.sh"  # cache/<registry>/tiny/<version> → tmp_path/tmp/planted.sh
    s3_client.put_object(Bucket="hostile-lambda", Key=f"reg/tiny/1/{path}", Body=PAYLOAD)
    s3_client.put_object(
        Bucket="hostile-lambda",
        Key="reg/tiny/1/manifest.json",
        Body=_hostile_manifest(bundle, [path]),
    )
    with pytest.raises(IntegrityError):
        loader.load_model(
            Settings.resolve(model_uri="s3://hostile-lambda/reg/tiny@prod", cache_dir=str(cache)),
            s3_client=s3_client,
        )
    assert _files_under(tmp_path / "tmp") == []


def test_symlinked_artifact_in_a_folder_registry_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(PAYLOAD)
    source = Registry(tmp_path / "reg")
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle)
    version = Path(source.url) / "tiny" / "1"
    (version / "notes.txt").symlink_to(secret)  # the manifest's hash matches what it points at
    (version / "manifest.json").write_bytes(_hostile_manifest(bundle, ["notes.txt"]))
    store = tmp_path / "store"
    with pytest.raises(IntegrityError, match="symlink"):
        source.download("tiny:1", store / "tiny" / "1")
    assert _files_under(store) == []
    with pytest.raises(IntegrityError, match="symlink"):
        source.open("tiny:1")  # serving in place follows the same rule


def test_oversized_artifact_stops_at_its_declared_size(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="big")
    source = Registry("s3://big/reg", s3_client=s3_client)
    source.publish(build_tiny_bundle(tmp_path / "build"))
    model_size = (tmp_path / "build" / "model.onnx").stat().st_size
    s3_client.put_object(Bucket="big", Key="reg/tiny/1/model.onnx", Body=os.urandom(model_size * 3))
    with pytest.raises(IntegrityError, match="larger than"):
        source.download("tiny:1", tmp_path / "store" / "tiny" / "1")
    assert _files_under(tmp_path / "store") == []


# --- item 4: identity binding ---------------------------------------------------------------
def _copy_version(registry: Registry, src: str, dst: str) -> None:
    root = Path(registry.url) / "tiny"
    (root / dst).mkdir()
    for path in (root / src).iterdir():
        (root / dst / path.name).write_bytes(path.read_bytes())


def test_a_signed_version_copied_elsewhere_is_refused_everywhere(tmp_path, monkeypatch):
    from strato._signing import generate_keypair

    pair = generate_keypair(tmp_path / "keys")
    registry = Registry(tmp_path / "reg")
    registry.publish(build_tiny_bundle(tmp_path / "b1", version="1"))
    registry.publish(build_tiny_bundle(tmp_path / "b2", version="2", seed=1))
    registry.sign("tiny:1", pair.private_path)
    _copy_version(registry, "1", "3")  # a replay of signed v1 as the "newest" version
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(pair.public_path))
    assert registry.resolve("tiny").version == "3"
    with pytest.raises(IntegrityError, match="not tiny:3"):
        registry.download("tiny:3", tmp_path / "store" / "tiny" / "3")
    with pytest.raises(IntegrityError, match="not tiny:3"):
        registry.open("tiny")
    with pytest.raises(IntegrityError, match="not tiny:3"):
        registry.manifest("tiny:3")
    assert not (tmp_path / "store").exists()
    assert registry.open("tiny:1").version == "1"  # where it was published it still verifies


def test_identity_is_checked_on_s3_too(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="replay")
    registry = Registry("s3://replay/r", s3_client=s3_client, cache_dir=tmp_path / "cache")
    registry.publish(build_tiny_bundle(tmp_path / "b1", version="1"))
    for obj in s3_client.list_objects_v2(Bucket="replay", Prefix="r/tiny/1/")["Contents"]:
        key = obj["Key"]
        if key.endswith(".claim"):
            continue
        body = s3_client.get_object(Bucket="replay", Key=key)["Body"].read()
        s3_client.put_object(Bucket="replay", Key=key.replace("/1/", "/7/"), Body=body)
    with pytest.raises(IntegrityError, match="not tiny:7"):
        registry.open("tiny:7")
    with pytest.raises(StratoError):
        registry.download("tiny:7", tmp_path / "store" / "tiny" / "7")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    "path",
    ["", ".", "a/./b", "a//b", "a/", "a\\b", "manifest.json", "x\0y", "/etc/x", "../x", "a/../b"],
)
def test_path_rules(path):
    from strato._manifest import check_artifact_path

    with pytest.raises(IntegrityError):
        check_artifact_path(path)
    assert check_artifact_path("engines/a.plan") == "engines/a.plan"


@pytest.mark.parametrize("paths", [["model.onnx"], ["notes", "notes/inner.txt"]])
def test_a_path_named_twice_or_nested_is_refused_before_any_write(tmp_path, paths):
    source = _hostile_folder_registry(tmp_path, [])
    version = Path(source.url) / "tiny" / "1"
    bundle = build_tiny_bundle(tmp_path / "again")
    (version / "manifest.json").write_bytes(_hostile_manifest(bundle, paths))
    with pytest.raises(IntegrityError, match="named twice"):
        source.download("tiny:1", tmp_path / "store" / "tiny" / "1")
    assert _files_under(tmp_path / "store") == []
