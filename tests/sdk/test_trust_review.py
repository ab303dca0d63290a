"""Issue 10 review: variants of a hostile registry the first round's tests did not cover.

- a FIFO planted where a manifest, an artifact or `aliases.json` should be blocked every reader
  forever (`open()` of a FIFO waits for a writer): `strato edge pull` and a daemon hung;
- a 1 GiB `manifest.json` or `aliases.json` was read whole into memory before its size check;
- artifact paths that pass as "relative and normalised" but cannot be written (a 300-byte file
  name, a folder named `manifest.json`) crashed the pull with a raw `OSError`; control characters
  and NFC/NFD twins (one file on a normalising disk) were accepted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from strato import Bundle, BundleError, IntegrityError, Registry

pytestmark = pytest.mark.timeout(60)  # the FIFO variants hung forever before the fix


def _root_conftest_helper(name: str):
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("strato_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


build_tiny_bundle = _root_conftest_helper("build_tiny_bundle")
PAYLOAD = b"payload\n"


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    monkeypatch.delenv("STRATO_TRUSTED_KEYS", raising=False)


def _published(tmp_path: Path) -> tuple[Registry, Path, Bundle]:
    source = Registry(tmp_path / "reg")
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle, alias="prod")
    return source, Path(source.url) / "tiny" / "1", bundle


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("planted", ["1/manifest.json", "1/model.onnx", "aliases.json"])
def test_a_fifo_in_a_folder_registry_is_refused_not_waited_on(tmp_path, planted):
    source, version, _ = _published(tmp_path)
    target = version.parent / planted
    target.unlink()
    os.mkfifo(target)
    device = tmp_path / "dev"
    with pytest.raises(IntegrityError, match="not a regular file"):
        source.download("tiny@prod" if planted == "aliases.json" else "tiny:1", device / "tiny")
    assert _files_under(device) == []


@pytest.mark.parametrize("planted", ["manifest.json", "model.onnx"])
def test_a_fifo_in_the_device_store_is_refused_on_load(tmp_path, planted):
    source, _, _ = _published(tmp_path)
    local = source.download("tiny:1", tmp_path / "dev" / "tiny" / "1").root
    (local / planted).unlink()
    os.mkfifo(local / planted)
    with pytest.raises(BundleError):
        Bundle.load(local)


@pytest.mark.parametrize("what", ["1/manifest.json", "aliases.json"])
def test_a_huge_metadata_file_is_refused_without_reading_it(tmp_path, what):
    source, version, _ = _published(tmp_path)
    with open(version.parent / what, "r+b") as stream:
        stream.truncate(1 << 30)  # sparse: 1 GiB of zeros costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="larger than"):
            source.download("tiny@prod", tmp_path / "dev" / "tiny")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"the refusal read {peak >> 20} MiB into memory"


def _with_artifacts(bundle: Bundle, paths: list[str]) -> bytes:
    raw = json.loads((bundle.root / "manifest.json").read_text())
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    raw["artifacts"] += [{"path": p, "sha256": digest, "size": len(PAYLOAD)} for p in paths]
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "paths",
    [["a" * 300], ["ok/" + "b" * 256 + "/c"], ["a\nb"], ["tab\there"], ["\u00e9", "e\u0301"]],
    ids=["300-byte-name", "256-byte-folder", "newline", "tab", "nfc-nfd-twins"],
)
def test_unwritable_or_ambiguous_artifact_paths_are_refused_before_a_byte(tmp_path, paths):
    source, version, bundle = _published(tmp_path)
    for path in paths:
        with_file = version / path
        try:
            with_file.parent.mkdir(parents=True, exist_ok=True)
            with_file.write_bytes(PAYLOAD)
        except OSError:
            pass  # this disk cannot hold it either; the manifest names it anyway
    (version / "manifest.json").write_bytes(_with_artifacts(bundle, paths))
    device = tmp_path / "dev"
    with pytest.raises(IntegrityError, match=r"escapes the bundle|named twice"):
        source.download("tiny:1", device / "tiny" / "1")
    assert _files_under(device) == []


def test_an_s3_artifact_under_a_folder_named_manifest_json_is_refused(tmp_path, s3_client):
    """S3 can hold `manifest.json` and `manifest.json/x` at once; a folder cannot."""
    s3_client.create_bucket(Bucket="hostile-folder")
    source = Registry("s3://hostile-folder/reg", s3_client=s3_client)
    bundle = build_tiny_bundle(tmp_path / "build")
    source.publish(bundle)
    s3_client.put_object(Bucket="hostile-folder", Key="reg/tiny/1/manifest.json/x", Body=PAYLOAD)
    s3_client.put_object(
        Bucket="hostile-folder",
        Key="reg/tiny/1/manifest.json",
        Body=_with_artifacts(bundle, ["manifest.json/x"]),
    )
    device = tmp_path / "dev"
    with pytest.raises(IntegrityError, match="escapes the bundle"):
        source.download("tiny:1", device / "tiny" / "1")
    assert _files_under(device) == []


def test_a_served_model_is_hashed_once_and_the_engine_loads_those_bytes(tmp_path):
    """`Bundle.load(keep_served=True)` (the device store, the Lambda) hands the engine the bytes
    it hashed: a model swapped on disk afterwards is not what is served, and nothing re-reads
    it; once taken, the bytes are gone (a second engine reads and hashes again)."""
    import numpy as np
    from strato.engines import load_engine

    root = build_tiny_bundle(tmp_path / "a").root
    other = build_tiny_bundle(tmp_path / "b", seed=1).root
    batch = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    expected = load_engine(Bundle.load(root)).infer({"input": batch})["logits"]
    kept = Bundle.load(root, keep_served=True)
    (root / "model.onnx").write_bytes((other / "model.onnx").read_bytes())  # swapped after
    served = load_engine(kept).infer({"input": batch})["logits"]
    np.testing.assert_array_equal(served, expected)
    with pytest.raises(IntegrityError):
        load_engine(kept)  # the kept bytes were taken: this one reads the swapped file
