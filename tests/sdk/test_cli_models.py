"""`strato models ls | show | promote | rollback` against a real folder registry."""

from __future__ import annotations

import json
from pathlib import Path

from strato import Registry
from strato._cli import app
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_ls_lists_versions_and_aliases(tiny_registry: Registry) -> None:
    code, out = _run("models", "ls", "--registry", tiny_registry.url, "--json")
    assert code == 0, out
    assert json.loads(out) == [{"name": "tiny", "versions": ["1", "2"], "aliases": {"prod": "1"}}]


def test_show_prints_the_manifest_of_an_alias(tiny_registry: Registry) -> None:
    code, out = _run("models", "show", "tiny@prod", "--registry", tiny_registry.url, "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert (manifest["name"], manifest["version"]) == ("tiny", "1")
    assert [spec["name"] for spec in manifest["inputs"]] == ["input"]
    assert manifest["artifacts"][0]["sha256"] == tiny_registry.manifest("tiny:1").artifacts[0].sha256

    code, out = _run("models", "show", "tiny:2", "--registry", tiny_registry.url)
    assert code == 0, out
    assert out.startswith("tiny:2 ")
    assert "input  input FP32" in out


def test_promote_then_rollback_moves_the_alias(tiny_registry: Registry) -> None:
    code, out = _run("models", "promote", "tiny:2", "--alias", "prod", "-r", tiny_registry.url)
    assert code == 0, out
    assert Registry(tiny_registry.url).aliases("tiny") == {"prod": "2"}

    code, out = _run("models", "rollback", "tiny", "--alias", "prod", "-r", tiny_registry.url)
    assert code == 0, out
    assert Registry(tiny_registry.url).aliases("tiny") == {"prod": "1"}


def test_unknown_model_is_a_one_line_error(tiny_registry: Registry) -> None:
    result = runner.invoke(app, ["models", "show", "nope:1", "-r", tiny_registry.url])
    assert result.exit_code != 0
    # StratoError reaches main()'s boundary as an exception under CliRunner; the message names it.
    assert result.exception is not None
    assert "nope" in str(result.exception)


def test_promote_to_a_missing_version_changes_nothing(tiny_registry: Registry, tmp_path: Path) -> None:
    before = Registry(tiny_registry.url).aliases("tiny")
    result = runner.invoke(app, ["models", "promote", "tiny:9", "-r", tiny_registry.url])
    assert result.exit_code != 0
    assert Registry(tiny_registry.url).aliases("tiny") == before
