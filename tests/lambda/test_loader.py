"""MODEL_URI parsing, settings precedence, and loading from S3 (moto) with GetObject only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from strato import Bundle, ConfigError, IntegrityError, ModelNotFound, Registry
from strato._registry import ModelRef
from strato_lambda.loader import ModelSource, load_model, parse_model_uri
from strato_lambda.settings import LAMBDA_PAYLOAD_LIMIT, Settings

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/reg/tiny@prod", ModelSource("s3", "s3://b/reg", ModelRef("tiny", alias="prod"))),
        ("s3://b/reg/tiny/3", ModelSource("s3", "s3://b/reg", ModelRef("tiny", "3"))),
        ("s3://b/tiny:3", ModelSource("s3", "s3://b", ModelRef("tiny", "3"))),
        (
            "s3://b/a/b/c/tiny@prod",
            ModelSource("s3", "s3://b/a/b/c", ModelRef("tiny", alias="prod")),
        ),
    ],
)
def test_parse_s3_uris(uri: str, expected: ModelSource) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["", "s3://bucket", "s3://bucket/tiny", "/no/such/dir", "s3://b/x/bad name@p"]
)
def test_bad_uris_are_config_errors(uri: str) -> None:
    with pytest.raises((ConfigError, ModelNotFound)):
        parse_model_uri(uri)


def test_parse_local_forms(tiny_registry: Registry, tiny_bundle: Bundle) -> None:
    root = str(tiny_registry.url)
    assert parse_model_uri(str(tiny_bundle.root)) == ModelSource("bundle", str(tiny_bundle.root))
    assert parse_model_uri(f"{root}/tiny@prod").ref == ModelRef("tiny", alias="prod")
    assert parse_model_uri(f"{root}/tiny:2").ref == ModelRef("tiny", "2")
    assert parse_model_uri(f"{root}/tiny/2") == ModelSource("bundle", f"{root}/tiny/2")
    assert parse_model_uri(f"{root}/tiny") == ModelSource("registry", root, ModelRef("tiny"))


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_URI", "s3://b/fallback@prod")
    monkeypatch.setenv("STRATO_ORT_THREADS", "3")
    monkeypatch.delenv("STRATO_MODEL_URI", raising=False)
    assert Settings.resolve().model_uri == "s3://b/fallback@prod"
    monkeypatch.setenv("STRATO_MODEL_URI", "s3://b/env@prod")
    settings = Settings.resolve(threads=2)
    assert settings.model_uri == "s3://b/env@prod" and settings.threads == 2
    assert Settings.resolve().threads == 3
    assert Settings.resolve(model_uri="/explicit").model_uri == "/explicit"
    assert Settings.resolve().max_payload == LAMBDA_PAYLOAD_LIMIT
    monkeypatch.setenv("STRATO_MAX_PAYLOAD_BYTES", "lots")
    with pytest.raises(ConfigError, match="max_payload"):
        Settings.resolve()
    with pytest.raises(ConfigError, match="unknown settings"):
        Settings.resolve(colour="blue")


def test_packaged_bundle_is_the_default(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Bundle, tmp_path: Path
) -> None:
    import shutil

    monkeypatch.delenv("STRATO_MODEL_URI", raising=False)
    monkeypatch.delenv("MODEL_URI", raising=False)
    shutil.copytree(tiny_bundle.root, tmp_path / "task" / "model")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path / "task"))
    assert Settings.resolve().model_uri == str(tmp_path / "task" / "model")


def _operations(client: Any) -> list[str]:
    seen: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: seen.append(model.name))
    return seen


def test_s3_alias_and_pinned_with_get_object_only(
    moto_s3: tuple[str, Any], tiny_registry: Registry, tmp_path: Path
) -> None:
    _, s3 = moto_s3
    remote = Registry("s3://models/registry", s3_client=s3)
    for version in ("1", "2"):
        remote.publish(tiny_registry.open(f"tiny:{version}"))
    remote.promote("tiny", "2", "prod")
    operations = _operations(s3)
    cache = tmp_path / "cache"
    model = load_model(
        Settings.resolve(model_uri="s3://models/registry/tiny@prod", cache_dir=str(cache)),
        s3_client=s3,
    )
    assert (model.name, model.version) == ("tiny", "2")
    assert set(operations) <= {"GetObject", "HeadObject"}, operations  # no ListBucket needed
    pinned = load_model(
        Settings.resolve(model_uri="s3://models/registry/tiny/1", cache_dir=str(cache)),
        s3_client=s3,
    )
    assert pinned.version == "1" and (pinned.engine.bundle.root / "manifest.json").is_file()
    assert pinned.engine.bundle.root.is_relative_to(cache)
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert not np.allclose(
        model.engine.infer({"input": x})["logits"], pinned.engine.infer({"input": x})["logits"]
    )
    leftovers = [p for p in cache.rglob(".*")]
    assert leftovers == []  # no staging left


def test_s3_tampered_artifact_is_refused(
    moto_s3: tuple[str, Any], tiny_bundle: Bundle, tmp_path: Path
) -> None:
    _, s3 = moto_s3
    Registry("s3://models/registry", s3_client=s3).publish(tiny_bundle, alias="prod")
    s3.put_object(Bucket="models", Key="registry/tiny/1/model.onnx", Body=b"not the model")
    settings = Settings.resolve(
        model_uri="s3://models/registry/tiny@prod", cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(IntegrityError):
        load_model(settings, s3_client=s3)
    assert not list((tmp_path / "c").rglob("*.onnx"))  # nothing half-verified is published


def test_s3_missing_alias_and_model(
    moto_s3: tuple[str, Any], tiny_bundle: Bundle, tmp_path: Path
) -> None:
    _, s3 = moto_s3
    Registry("s3://models/registry", s3_client=s3).publish(tiny_bundle, alias="prod")
    for uri, needle in (
        ("s3://models/registry/tiny@canary", "canary"),
        ("s3://models/registry/other@prod", "other"),
    ):
        settings = Settings.resolve(model_uri=uri, cache_dir=str(tmp_path / "c"))
        with pytest.raises(ModelNotFound, match=needle):
            load_model(settings, s3_client=s3)


def test_handler_serves_from_s3(
    moto_s3: tuple[str, Any], tiny_bundle: Bundle, tmp_path: Path, event: Any, lambda_context: Any
) -> None:
    from strato_lambda import app

    _, s3 = moto_s3
    Registry("s3://models/registry", s3_client=s3).publish(tiny_bundle, alias="prod")
    app.configure(
        Settings.resolve(model_uri="s3://models/registry/tiny@prod", cache_dir=str(tmp_path / "c")),
        s3_client=s3,
    )
    try:
        response = app.handler(event("http_model_metadata"), lambda_context)
        assert response["statusCode"] == 200 and json.loads(response["body"])["versions"] == ["1"]
    finally:
        app.configure(Settings.resolve(model_uri=""), load=False)
