"""One vocabulary for options (issue 15): `--registry` with `--s3-endpoint` wherever a registry
can be on S3, `--url` for a running daemon, old spellings kept only as hidden aliases."""

from __future__ import annotations

import json

import pytest
import typer.main
from strato import Registry
from strato._cli import app
from support import write_tiny_onnx
from typer.testing import CliRunner

# Commands that take --registry but no --s3-endpoint, and why.
NO_S3_ENDPOINT = {
    "quickstart": "a local demo: it serves from the registry it trains into, in subprocesses",
    "edge install-service": "the S3 endpoint goes in the unit's EnvironmentFile",
}
DAEMON_CLIENTS = {"predict", "edge status", "edge models", "edge predict", "edge bench"}


def _commands() -> dict[str, dict[str, bool]]:
    """Each command's visible and hidden option spellings: {"edge predict": {"--url": False}}."""
    found: dict[str, dict[str, bool]] = {}

    def walk(command, path, parent):
        if hasattr(command, "list_commands"):
            context = command.make_context(command.name, [], resilient_parsing=True, parent=parent)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), [*path, name], context)
            return
        found[" ".join(path)] = {
            spelling: param.hidden
            for param in command.params
            if param.param_type_name == "option"
            for spelling in (*param.opts, *param.secondary_opts)
        }

    walk(typer.main.get_command(app), [], None)
    return found


def test_every_registry_option_comes_with_s3_endpoint():
    commands = _commands()
    missing = [
        name
        for name, options in commands.items()
        if "--registry" in options and "--s3-endpoint" not in options
        and name not in NO_S3_ENDPOINT
    ]  # fmt: skip
    assert not missing, missing
    assert all("--registry" in commands[name] for name in NO_S3_ENDPOINT)


def test_every_daemon_client_takes_url_and_no_visible_edge_option():
    commands = _commands()
    for name in DAEMON_CLIENTS:
        assert commands[name].get("--url") is False, name  # present and visible
    visible_edge = [name for name, options in commands.items() if options.get("--edge") is False]
    assert not visible_edge, visible_edge
    assert commands["predict"]["--edge"] is True  # the old spelling, hidden


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.delenv("STRATO_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("STRATO_REGISTRY", raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_import_publishes_to_s3_through_s3_endpoint(tmp_path, s3_client, aws_env):
    """A training-side command reaches a moto S3 registry by `--s3-endpoint` alone (no env)."""
    s3_client.create_bucket(Bucket="vocab")
    write_tiny_onnx(tmp_path / "tiny.onnx")
    where = ["--registry", "s3://vocab/team", "--s3-endpoint", s3_client.meta.endpoint_url]
    done = CliRunner().invoke(
        app,
        ["import", str(tmp_path / "tiny.onnx"), "--name", "tiny", "--task", "generic", *where,
         "--quiet", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert Registry("s3://vocab/team", s3_client=s3_client).versions("tiny") == ["1"]
    shown = CliRunner().invoke(app, ["models", "show", "tiny:1", *where, "--json"])
    assert json.loads(shown.output)["name"] == "tiny"
