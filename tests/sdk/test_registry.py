"""Registry: references, aliases, immutability, atomic publish, bundle verification."""

from __future__ import annotations

import json

import pytest
from strato import (
    Bundle,
    BundleError,
    ConfigError,
    IntegrityError,
    ModelNotFound,
    ModelRef,
    Registry,
)
from support import build_tiny_bundle


def test_resolve_forms(tiny_registry):
    assert tiny_registry.models() == ["tiny"]
    assert tiny_registry.versions("tiny") == ["1", "2"]
    assert tiny_registry.resolve("tiny") == ModelRef("tiny", "2")
    assert tiny_registry.resolve("tiny:1") == ModelRef("tiny", "1")
    assert tiny_registry.resolve("tiny@prod") == ModelRef("tiny", "1")


@pytest.mark.parametrize("ref", ["nope", "tiny:9", "tiny@staging", "../etc", "tiny:../1"])
def test_unknown_refs(tiny_registry, ref):
    with pytest.raises(ModelNotFound):
        tiny_registry.resolve(ref)


def test_promote_and_rollback(tiny_registry):
    tiny_registry.promote("tiny", "2", "prod")
    assert tiny_registry.resolve("tiny@prod").version == "2"
    assert tiny_registry.rollback("tiny", "prod") == "1"
    assert tiny_registry.resolve("tiny@prod").version == "1"
    with pytest.raises(ConfigError):
        tiny_registry.rollback("tiny", "prod")


def test_versions_are_immutable(tiny_registry, tmp_path):
    with pytest.raises(BundleError, match="immutable"):
        tiny_registry.publish(build_tiny_bundle(tmp_path / "again", version="1"))


def test_next_version(tiny_registry):
    assert tiny_registry.next_version("tiny") == "3"
    assert tiny_registry.next_version("other") == "1"


def test_publish_refuses_corrupt_bundle(registry, tiny_bundle):
    path = tiny_bundle.path_of("model.onnx")
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        registry.publish(tiny_bundle)
    assert registry.models() == []


def test_bundle_path_escape_is_refused(tiny_bundle):
    manifest = json.loads((tiny_bundle.root / "manifest.json").read_text())
    manifest["artifacts"][0]["path"] = "../outside.onnx"
    (tiny_bundle.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="escapes"):
        Bundle.load(tiny_bundle.root)


def test_registry_env_default(monkeypatch, tmp_path):
    monkeypatch.setenv("STRATO_REGISTRY", str(tmp_path / "from-env"))
    assert Registry().url == str(tmp_path / "from-env")
    assert Registry(tmp_path / "explicit").url == str(tmp_path / "explicit")


def test_s3_registry_round_trip(tmp_path, tiny_bundle, s3_client):
    s3 = s3_client
    s3.create_bucket(Bucket="models")
    reg = Registry("s3://models/team", s3_client=s3, cache_dir=tmp_path / "cache")
    reg.publish(tiny_bundle, alias="prod")
    assert reg.models() == ["tiny"]
    assert reg.resolve("tiny@prod").version == "1"
    bundle = reg.open("tiny@prod")
    assert bundle.manifest.labels[0] == "0"
    # a corrupted object is refused on download and nothing is left behind
    s3.put_object(Bucket="models", Key="team/tiny/1/model.onnx", Body=b"garbage")
    target = tmp_path / "store" / "tiny" / "1"
    with pytest.raises(IntegrityError):
        reg.download("tiny:1", target)
    assert not target.exists()
    assert not (tmp_path / "store").exists()  # not even the folders it would have made
