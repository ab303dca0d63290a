"""Ed25519-signed bundles: keygen, sign, verify, and enforcement in Bundle.load / Registry."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from strato import Bundle, ConfigError, IntegrityError, Registry, SignatureError
from strato._bundle import sha256_file
from strato._cli import app
from strato._signing import (
    TrustedKeys,
    generate_keypair,
    load_public_key,
    resolve_trusted_keys,
)
from typer.testing import CliRunner


@pytest.fixture
def keys(tmp_path: Path):
    """Two key pairs: `alice` (trusted in the tests) and `mallory` (not trusted)."""
    return (
        generate_keypair(tmp_path / "keys", name="alice"),
        generate_keypair(tmp_path / "other-keys", name="mallory"),
    )


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    monkeypatch.delenv("STRATO_TRUSTED_KEYS", raising=False)


def test_keygen_writes_private_key_0600_and_refuses_overwrite(tmp_path):
    pair = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(os.stat(pair.private_path).st_mode) == 0o600
    assert pair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert len(pair.key_id) == 16
    assert TrustedKeys.from_paths([pair.public_path]).ids == [pair.key_id]
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k")


def test_signed_bundle_verifies_and_manifest_records_signature(tiny_bundle, keys):
    alice, _ = keys
    before = {a.path: a.sha256 for a in tiny_bundle.manifest.artifacts}
    signed = Bundle.load(tiny_bundle.root, verify=False).sign(alice.private_path)
    raw = json.loads((tiny_bundle.root / "manifest.json").read_text())
    assert raw["signature"]["algorithm"] == "ed25519"
    assert raw["signature"]["key_id"] == alice.key_id == signed.signature["key_id"]
    assert {a["path"]: a["sha256"] for a in raw["artifacts"]} == before
    bundle = Bundle.load(tiny_bundle.root, trusted_keys=alice.public_path)
    assert bundle.check_signature(alice.public_path) == alice.key_id


def test_no_trusted_keys_means_no_enforcement(tiny_bundle):
    assert resolve_trusted_keys() is None
    assert Bundle.load(tiny_bundle.root).signature is None
    assert tiny_bundle.check_signature() is None


def test_unsigned_bundle_refused_when_env_configures_keys(tiny_bundle, keys, monkeypatch):
    alice, _ = keys
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(alice.public_path.parent))
    with pytest.raises(SignatureError, match=rf"not signed.*{alice.key_id}") as info:
        Bundle.load(tiny_bundle.root)
    assert "manifest.json" in str(info.value)


def test_unknown_key_lists_trusted_key_ids(tiny_bundle, keys):
    alice, mallory = keys
    Bundle.load(tiny_bundle.root, verify=False).sign(mallory.private_path)
    with pytest.raises(SignatureError) as info:
        Bundle.load(tiny_bundle.root, trusted_keys=[alice.public_path])
    message = str(info.value)
    assert f"signed with key {mallory.key_id}, which is not trusted" in message
    assert f"trusted key ids: {alice.key_id}" in message


def test_tampered_manifest_does_not_verify(tiny_bundle, keys):
    alice, _ = keys
    Bundle.load(tiny_bundle.root, verify=False).sign(alice.private_path)
    path = tiny_bundle.root / "manifest.json"
    raw = json.loads(path.read_text())
    raw["labels"][0] = "seven"  # a relabelled model is a different model
    path.write_text(json.dumps(raw))
    with pytest.raises(
        SignatureError, match=rf"manifest.json signature does not verify with key {alice.key_id}"
    ):
        Bundle.load(tiny_bundle.root, trusted_keys=str(alice.public_path))


def test_replaced_artifact_with_rehashed_manifest_is_signature_error(tiny_bundle, keys):
    """An attacker who swaps the model and fixes its sha256 in the manifest breaks the signature."""
    alice, _ = keys
    Bundle.load(tiny_bundle.root, verify=False).sign(alice.private_path)
    model = tiny_bundle.path_of("model.onnx")
    evil = bytearray(model.read_bytes())
    evil[-64:] = bytes(64)  # other weights
    model.write_bytes(bytes(evil))
    path = tiny_bundle.root / "manifest.json"
    raw = json.loads(path.read_text())
    raw["artifacts"][0]["sha256"] = sha256_file(model)
    path.write_text(json.dumps(raw))
    Bundle.load(tiny_bundle.root)  # without trusted keys the rehashed bundle looks intact
    with pytest.raises(SignatureError, match="does not verify"):
        Bundle.load(tiny_bundle.root, trusted_keys=alice.public_path)


def test_changed_file_under_valid_signature_stays_integrity_error(tiny_bundle, keys):
    alice, _ = keys
    Bundle.load(tiny_bundle.root, verify=False).sign(alice.private_path)
    model = tiny_bundle.path_of("model.onnx")
    data = bytearray(model.read_bytes())
    data[200] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        Bundle.load(tiny_bundle.root, trusted_keys=alice.public_path)


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        ("not-an-object", "malformed"),
        ({"algorithm": "rsa", "key_id": "x", "value": "AA=="}, "algorithm 'rsa'"),
        ({"algorithm": "ed25519", "key_id": 3, "value": "AA=="}, "string 'key_id'"),
        ({"algorithm": "ed25519", "key_id": "k", "value": "***"}, "not base64"),
    ],
)
def test_malformed_signature_fields(tiny_bundle, keys, signature, match):
    alice, _ = keys
    path = tiny_bundle.root / "manifest.json"
    raw = json.loads(path.read_text())
    raw["signature"] = signature
    path.write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match=match):
        Bundle.load(tiny_bundle.root, trusted_keys=alice.public_path)


def test_trusted_key_configuration_errors(tmp_path, keys):
    alice, _ = keys
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no \*\.pub"):
        TrustedKeys.from_paths([empty])
    with pytest.raises(ConfigError, match="does not exist"):
        TrustedKeys.parse(str(tmp_path / "missing.pub"))
    with pytest.raises(ConfigError, match="is a private key"):
        load_public_key(alice.private_path)
    with pytest.raises(ConfigError, match="names no key files"):
        TrustedKeys.parse(" , ")
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(garbage)
    both = TrustedKeys.parse(f"{alice.public_path}, {tmp_path / 'other-keys'}")
    assert len(both) == 2


def test_registry_version_signed_in_place_and_enforced(tiny_registry, keys, monkeypatch):
    alice, mallory = keys
    onnx_before = (tiny_registry.store.root / "tiny/1/model.onnx").read_bytes()
    tiny_registry.sign("tiny@prod", alice.private_path)
    assert (tiny_registry.store.root / "tiny/1/model.onnx").read_bytes() == onnx_before
    assert tiny_registry.manifest("tiny:1").signature["key_id"] == alice.key_id
    trusting = Registry(tiny_registry.url, trusted_keys=alice.public_path)
    assert trusting.open("tiny:1").version == "1"
    with pytest.raises(SignatureError, match=r"tiny:2: .*not signed"):
        trusting.open("tiny:2")
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(mallory.public_path))
    with pytest.raises(SignatureError, match=f"signed with key {alice.key_id}"):
        Registry(tiny_registry.url).open("tiny:1")


def test_s3_download_refuses_wrongly_signed_bundle(
    tmp_path, tiny_bundle, keys, monkeypatch, s3_client
):

    alice, mallory = keys
    s3 = s3_client
    s3.create_bucket(Bucket="signed-models")
    reg = Registry("s3://signed-models/team", s3_client=s3, cache_dir=tmp_path / "cache")
    reg.publish(tiny_bundle, alias="prod")
    reg.sign("tiny@prod", alice.private_path)
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(mallory.public_path))
    target = tmp_path / "pulled" / "tiny" / "1"
    with pytest.raises(SignatureError, match=f"{alice.key_id}, which is not trusted"):
        reg.download("tiny:1", target)
    assert not target.exists()
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(alice.public_path))
    bundle = reg.download("tiny:1", target)
    assert bundle.signature["key_id"] == alice.key_id
    assert Bundle.load(target).check_signature() == alice.key_id


def test_cli_keygen_sign_verify(tmp_path, tiny_registry):
    runner = CliRunner()
    result = runner.invoke(app, ["models", "keygen", "--out", str(tmp_path / "k"), "--json"])
    assert result.exit_code == 0, result.output
    key = json.loads(result.output)
    reg = ["--registry", tiny_registry.url]
    result = runner.invoke(app, ["models", "sign", "tiny:1", "--key", key["private_key"], *reg])
    assert result.exit_code == 0, result.output
    assert f"signed tiny:1 with key {key['key_id']}" in result.output
    result = runner.invoke(
        app, ["models", "verify", "tiny@prod", "--trusted", key["public_key"], *reg, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["key_id"] == key["key_id"]
    result = runner.invoke(
        app, ["models", "verify", "tiny:2", "--trusted", str(tmp_path / "k"), *reg]
    )
    assert result.exit_code == 1
    assert "not signed" in result.output


def test_cli_signs_and_verifies_a_bundle_directory(tmp_path, tiny_bundle):
    runner = CliRunner()
    pair = generate_keypair(tmp_path / "k")
    root = str(tiny_bundle.root)
    assert (
        runner.invoke(app, ["models", "sign", root, "--key", str(pair.private_path)]).exit_code == 0
    )
    result = runner.invoke(
        app,
        ["models", "verify", root, "--json"],
        env={"STRATO_TRUSTED_KEYS": str(pair.public_path)},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True
    result = runner.invoke(app, ["models", "verify", root])
    assert result.exit_code == 1
    assert "no trusted keys" in result.output


def test_loading_without_keys_does_not_import_signing(tiny_bundle):
    code = (
        "import sys, strato; strato.Bundle.load(sys.argv[1]); "
        "print('strato._signing' in sys.modules, 'cryptography' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "STRATO_TRUSTED_KEYS"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_bundle.root)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.split() == ["False", "False"]


# --- enforcement through the tiers: `strato edge pull` and the Lambda S3 loader ------------------
def test_edge_pull_refuses_unsigned_and_installs_signed(tiny_registry, keys, tmp_path, monkeypatch):
    sync = pytest.importorskip("strato_edge.sync")
    alice, _ = keys
    tiny_registry.sign("tiny:1", alice.private_path)
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(alice.public_path))
    store = tmp_path / "device"
    result = sync.pull("tiny:1", source=tiny_registry, store=store)
    assert result.version == "1" and (store / "tiny/1/manifest.json").is_file()
    with pytest.raises(SignatureError, match=r"tiny:2: .*not signed"):
        sync.pull("tiny:2", source=tiny_registry, store=store)
    assert not (store / "tiny/2").exists()


def _bundle_with_plan(tiny_bundle):
    """tiny:1 plus a (fake) TensorRT plan artifact, which the Lambda loader never downloads."""
    from strato._bundle import make_bundle

    plan = tiny_bundle.root / "engines" / "fake.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"not a real plan")
    manifest = tiny_bundle.manifest
    return make_bundle(
        tiny_bundle.root,
        name=manifest.name,
        version=manifest.version,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        labels=manifest.labels,
        artifacts=[
            {"path": "model.onnx", "kind": "onnx", "precision": "fp32"},
            {"path": "engines/fake.plan", "kind": "tensorrt", "precision": "fp16"},
        ],
    )


def test_lambda_s3_loader_checks_the_published_signature(
    tmp_path, tiny_bundle, keys, monkeypatch, s3_client
):
    loader = pytest.importorskip("strato_lambda.loader")
    from strato import ModelRef

    alice, mallory = keys
    s3 = s3_client
    s3.create_bucket(Bucket="signed-lambda")
    reg = Registry("s3://signed-lambda/m", s3_client=s3)
    reg.publish(_bundle_with_plan(tiny_bundle), alias="prod")
    reg.sign("tiny@prod", alice.private_path)
    cache = tmp_path / "lambda-cache"
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(mallory.public_path))
    with pytest.raises(SignatureError, match="not trusted"):
        loader.fetch_s3_bundle(reg.url, ModelRef.parse("tiny@prod"), cache, s3_client=s3)
    assert not cache.exists()
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", str(alice.public_path))
    bundle = loader.fetch_s3_bundle(reg.url, ModelRef.parse("tiny@prod"), cache, s3_client=s3)
    assert sorted(p.name for p in bundle.root.iterdir()) == ["manifest.json", "model.onnx"]
    assert bundle.check_signature() == alice.key_id  # the manifest is kept as signed
    again = loader.fetch_s3_bundle(reg.url, ModelRef.parse("tiny:1"), cache, s3_client=s3)
    assert again.root == bundle.root  # cache hit


def test_cli_signs_and_verifies_on_s3_with_s3_endpoint(
    tmp_path, tiny_bundle, s3_client, monkeypatch
):
    """`models sign|verify` take `--s3-endpoint` like every other command that reaches S3."""
    monkeypatch.delenv("STRATO_S3_ENDPOINT", raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3_client.create_bucket(Bucket="trust")
    Registry("s3://trust/team", s3_client=s3_client).publish(tiny_bundle, alias="prod")
    pair = generate_keypair(tmp_path / "k")
    where = ["-r", "s3://trust/team", "--s3-endpoint", s3_client.meta.endpoint_url]
    runner = CliRunner()
    signed = runner.invoke(
        app, ["models", "sign", "tiny@prod", "-k", str(pair.private_path), *where]
    )
    assert signed.exit_code == 0, signed.output
    checked = runner.invoke(
        app, ["models", "verify", "tiny:1", "-t", str(pair.public_path), *where, "--json"]
    )
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["key_id"] == pair.key_id
    manifest = s3_client.get_object(Bucket="trust", Key="team/tiny/1/manifest.json")
    assert json.loads(manifest["Body"].read())["signature"]["key_id"] == pair.key_id
