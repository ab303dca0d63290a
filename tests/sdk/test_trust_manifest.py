"""Issue 10 items 5, 6, 12 (registry/store parts): caches verified on every load and keyed by
registry + manifest sha256; the engine loads exactly the bytes it hashed; signed bytes are RFC 8785
canonical JSON and a signed manifest is exactly what this reader understands; file modes follow
the umask."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from strato import BundleError, IntegrityError, Registry, SignatureError
from strato._bundle import Bundle, canonical_json, sha256_file
from strato._signing import generate_keypair
from support import build_tiny_bundle, write_tiny_onnx

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    monkeypatch.delenv("STRATO_TRUSTED_KEYS", raising=False)


# --- item 5: caches -----------------------------------------------------------------------------
def _plant_unsigned_model(cache: Path, tmp_path: Path) -> None:
    """A local attacker with write access to the cache swaps the model and fixes the manifest."""
    [manifest_path] = list(cache.rglob("manifest.json"))
    write_tiny_onnx(tmp_path / "evil.onnx", seed=99)
    model = manifest_path.parent / "model.onnx"
    model.write_bytes((tmp_path / "evil.onnx").read_bytes())
    raw = json.loads(manifest_path.read_text())
    raw.pop("signature", None)
    raw["artifacts"][0]["sha256"] = sha256_file(model)
    raw["artifacts"][0]["size"] = model.stat().st_size
    manifest_path.write_text(json.dumps(raw))


@pytest.mark.parametrize("keys", [True, False], ids=["keys-set", "no-keys"])
def test_lambda_cache_hit_is_verified_on_every_load(tmp_path, s3_client, monkeypatch, keys):
    from strato_lambda.loader import load_model
    from strato_lambda.settings import Settings

    pair = generate_keypair(tmp_path / "keys")
    s3_client.create_bucket(Bucket="cached")
    registry = Registry("s3://cached/r", s3_client=s3_client)
    registry.publish(build_tiny_bundle(tmp_path / "b1"), alias="prod")
    registry.sign("tiny:1", pair.private_path)
    if keys:
        monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(pair.public_path))
    cache = tmp_path / "shared-tmp"
    settings = Settings.resolve(model_uri="s3://cached/r/tiny@prod", cache_dir=str(cache))
    x = np.random.default_rng(3).random((2, 1, 28, 28), dtype=np.float32)
    genuine = load_model(settings, s3_client=s3_client).engine.infer({"input": x})["logits"]
    _plant_unsigned_model(cache, tmp_path)
    evil = (tmp_path / "evil.onnx").read_bytes()
    again = load_model(settings, s3_client=s3_client)  # the cold start after the plant
    # the planted copy was refused and replaced by the registry's, never served
    np.testing.assert_allclose(again.engine.infer({"input": x})["logits"], genuine, rtol=1e-6)
    assert [p.read_bytes() == evil for p in cache.rglob("model.onnx")] == [False]


def test_two_s3_registries_never_share_a_cache_entry(tmp_path, s3_client):
    cache = tmp_path / "cache"
    opened = []
    for bucket, seed in (("team-a", 1), ("team-b", 2)):
        s3_client.create_bucket(Bucket=bucket)
        registry = Registry(f"s3://{bucket}/models", s3_client=s3_client, cache_dir=cache)
        registry.publish(build_tiny_bundle(tmp_path / bucket, seed=seed))
        opened.append(registry.open("tiny:1"))
    assert opened[0].root != opened[1].root
    for bucket, bundle in zip(("team-a", "team-b"), opened, strict=True):
        source = tmp_path / bucket / "model.onnx"
        assert bundle.path_of("model.onnx").read_bytes() == source.read_bytes()


# --- item 6: load exactly the verified bytes ---------------------------------------------------
def test_a_model_swapped_after_verification_is_never_loaded(tmp_path):
    from strato._engines.onnxruntime import OnnxRuntimeEngine

    bundle = build_tiny_bundle(tmp_path / "b", seed=0)
    loaded = Bundle.load(bundle.root)
    write_tiny_onnx(tmp_path / "other.onnx", seed=5)
    (tmp_path / "other.onnx").replace(bundle.root / "model.onnx")  # after the sha256 check
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        OnnxRuntimeEngine(loaded, loaded.select())


def test_a_model_flipping_under_load_never_serves_the_other_weights(tmp_path):
    from strato._engines.onnxruntime import OnnxRuntimeEngine

    bundle = build_tiny_bundle(tmp_path / "b", seed=0)
    good = (bundle.root / "model.onnx").read_bytes()
    write_tiny_onnx(tmp_path / "other.onnx", seed=5)
    other = (tmp_path / "other.onnx").read_bytes()
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    stop = threading.Event()

    def flip() -> None:
        index = 0
        while not stop.is_set():
            tmp = bundle.root / f".swap{index % 2}"
            tmp.write_bytes(other if index % 2 else good)
            tmp.replace(bundle.root / "model.onnx")
            index += 1

    expected = OnnxRuntimeEngine(bundle, bundle.select()).infer({"input": x})["logits"]
    flipper = threading.Thread(target=flip)
    flipper.start()
    loads = refused = 0
    try:
        for _ in range(150):
            try:
                engine = OnnxRuntimeEngine(bundle, bundle.select())
            except IntegrityError:
                refused += 1
                continue
            loads += 1
            np.testing.assert_allclose(engine.infer({"input": x})["logits"], expected, rtol=1e-6)
    finally:
        stop.set()
        flipper.join()
    assert loads and refused, (loads, refused)  # both happened, and no load ran other weights


# --- item 12: canonical signed bytes, strict signed manifests ----------------------------------
def test_canonical_json_is_rfc8785():
    value = {"b": 1.0, "a": [1e21, 1e-7, 0.000001, 123.456, -0.0, True, None], "é": "x\u2028"}
    assert canonical_json(value) == (
        '{"a":[1e+21,1e-7,0.000001,123.456,0,true,null],"b":1,"é":"x\u2028"}'.encode()
    )
    # keys sort by UTF-16 code units: U+1F600 (surrogates D83D…) before U+FFFD
    assert canonical_json({"\ufffd": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufffd":1}'.encode()


def _signed(tmp_path: Path):
    pair = generate_keypair(tmp_path / "keys")
    bundle = build_tiny_bundle(tmp_path / "b")
    bundle.sign(pair.private_path)
    return pair, bundle.root / "manifest.json"


def test_a_signed_manifest_with_an_unknown_field_is_refused(tmp_path):
    pair, path = _signed(tmp_path)
    raw = json.loads(path.read_text())
    raw["serve_from"] = "http://elsewhere"  # a field this reader would silently ignore
    path.write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="unknown field"):
        Bundle.load(path.parent, trusted_keys=pair.public_path)


def test_a_signed_manifest_that_parses_to_the_same_values_but_other_bytes_is_refused(tmp_path):
    pair, path = _signed(tmp_path)
    raw = json.loads(path.read_text())
    raw["artifacts"][0]["size"] = str(raw["artifacts"][0]["size"])  # "123" parses like 123
    path.write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="canonical"):
        Bundle.load(path.parent, trusted_keys=pair.public_path)


def test_duplicate_keys_are_refused(tmp_path):
    bundle = build_tiny_bundle(tmp_path / "b")
    path = bundle.root / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"name": "tiny",', '"name": "tiny", "name": "evil",', 1))
    with pytest.raises(BundleError, match="duplicate key 'name'"):
        Bundle.load(bundle.root)


def test_signing_refuses_unknown_fields(tmp_path):
    pair = generate_keypair(tmp_path / "keys")
    bundle = build_tiny_bundle(tmp_path / "b")
    raw = json.loads((bundle.root / "manifest.json").read_text())
    raw["mystery"] = 1
    (bundle.root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="unknown field"):
        Bundle.load(bundle.root).sign(pair.private_path)


# --- item 12: modes follow the umask ------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_registry_and_store_files_respect_the_umask(tmp_path):
    from strato_edge.sync import pull

    old = os.umask(0o002)  # a group that serves what root pulled
    try:
        source = Registry(tmp_path / "reg")
        source.publish(build_tiny_bundle(tmp_path / "b"), alias="prod")
        store = tmp_path / "device"
        pull("tiny@prod", source=source, store=store)
    finally:
        os.umask(old)
    for root in (Path(source.url), store):
        assert _mode(root / "tiny" / "1") == 0o775, root
        assert _mode(root / "tiny" / "1" / "manifest.json") == 0o664, root
        assert _mode(root / "tiny" / "1" / "model.onnx") == 0o664, root
        assert _mode(root / "tiny" / "aliases.json") == 0o664, root


def test_what_is_signed_reads_back_and_verifies(tmp_path):
    """Floats, integer labels, non-ASCII text and the pipeline's descriptive fields all survive
    write → read → canonical bytes, so a fresh signature always verifies."""
    from strato import TensorSpec
    from strato._bundle import make_bundle

    pair = generate_keypair(tmp_path / "keys")
    root = tmp_path / "b"
    root.mkdir()
    (root / "notes.txt").write_text("ok")
    bundle = make_bundle(
        root,
        name="odd",
        version="1",
        inputs=[TensorSpec("x", "FP32", (-1, 3))],
        outputs=[TensorSpec("y", "FP32", (-1, 2))],
        artifacts=[{"path": "notes.txt"}],
        labels=(0, 1),
        metrics={"accuracy": 1.0, "f1": 0.96875, "tiny": 1e-7, "big": 1e21},
        calibration={"temperature": 1.5},
        extra={"training": {"model": "mlp", "note": "é\u2028"}},
    )
    bundle.sign(pair.private_path)
    loaded = Bundle.load(root, trusted_keys=pair.public_path)
    assert loaded.manifest.labels == ("0", "1")
    assert loaded.check_signature(pair.public_path) is not None
