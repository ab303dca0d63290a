"""`strato models rm` / `prune --keep N` over the public Registry API, on a folder registry and
on S3 (moto): an aliased version is never removed without --force, numbers are never reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from strato import Registry
from strato._cli import app
from strato._errors import ConfigError, ModelNotFound, VersionExists
from support import build_tiny_bundle
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _four_versions(registry: Registry, tmp_path: Path) -> Registry:
    for version in ("1", "2", "3", "4"):
        bundle = build_tiny_bundle(tmp_path / f"b{version}", version=version, seed=int(version))
        registry.publish(bundle, alias="prod" if version == "2" else None)
    return registry


@pytest.fixture(params=["folder", "s3"])
def registry(request, tmp_path: Path) -> Registry:
    if request.param == "folder":
        return _four_versions(Registry(tmp_path / "registry"), tmp_path)
    s3 = request.getfixturevalue("s3_client")
    s3.create_bucket(Bucket="models")
    return _four_versions(Registry("s3://models/strato", s3_client=s3), tmp_path)


def _cli(registry: Registry, *args: str) -> list[str]:
    extra = ["--registry", registry.url]
    if not registry.is_local:
        extra += ["--s3-endpoint", registry.store.client.meta.endpoint_url]
    return [*args, *extra]


def test_rm_deletes_one_version_and_never_reuses_its_number(registry: Registry, tmp_path: Path):
    out = json.loads(_run(*_cli(registry, "models", "rm", "tiny:4", "--json")))
    assert out == {"model": "tiny", "removed": ["4"], "aliases_dropped": []}
    assert registry.versions("tiny") == ["1", "2", "3"]
    with pytest.raises(ModelNotFound):
        registry.open("tiny:4")
    assert registry.next_version("tiny") == "5"  # 4 stays taken
    with pytest.raises(VersionExists):
        registry.publish(build_tiny_bundle(tmp_path / "again", version="4"))


def test_rm_refuses_an_aliased_version_without_force(registry: Registry):
    result = runner.invoke(app, _cli(registry, "models", "rm", "tiny:2"))
    assert isinstance(result.exception, ConfigError) and "@prod" in str(result.exception)
    assert registry.versions("tiny") == ["1", "2", "3", "4"]  # nothing changed
    assert registry.aliases("tiny") == {"prod": "2"}
    out = _run(*_cli(registry, "models", "rm", "tiny@prod", "--force"))
    assert "removed tiny:2" in out and "@prod dropped" in out
    assert registry.versions("tiny") == ["1", "3", "4"] and registry.aliases("tiny") == {}


def test_prune_keeps_the_newest_and_every_aliased_version(registry: Registry):
    out = json.loads(_run(*_cli(registry, "models", "prune", "tiny", "--keep", "1", "--json")))
    assert out == {"model": "tiny", "removed": ["1", "3"]}
    assert registry.versions("tiny") == ["2", "4"]  # 2 is prod, 4 the newest
    assert "nothing to prune" in _run(*_cli(registry, "models", "prune", "tiny", "--keep", "1"))
    forced = json.loads(
        _run(*_cli(registry, "models", "prune", "tiny", "--keep", "1", "--force", "--json"))
    )
    assert forced["removed"] == ["2"] and registry.versions("tiny") == ["4"]


def test_rm_of_a_missing_version_is_a_clear_error(registry: Registry):
    result = runner.invoke(app, _cli(registry, "models", "rm", "tiny:9"))
    assert isinstance(result.exception, ModelNotFound) and "9" in str(result.exception)
