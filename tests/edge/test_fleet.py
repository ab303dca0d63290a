"""`strato edge install-service` and `greengrass-component`: generated, validated, and run.

The systemd units are checked by `systemd-analyze verify` and their ExecStart lines are run as
real processes; the Greengrass recipe is validated against the recipe schema and its Run script
is run the way a Greengrass nucleus would (recipe variables interpolated, Setenv exported).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from strato._cli import app
from strato._errors import ConfigError
from support import free_port
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(180)

STRATO = str(Path(sys.executable).with_name("strato"))
SCHEMA = Path(__file__).parent / "schemas" / "greengrass-recipe-2020-01-25.schema.json"
runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        current.setdefault(key, []).append(value)
    return sections


def _exec_argv(unit: dict[str, dict[str, list[str]]]) -> list[str]:
    line = unit["Service"]["ExecStart"][0]
    return [a.replace("$$", "$").replace("%%", "%") for a in shlex.split(line)]


def _wait_ready(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


# --- systemd ---------------------------------------------------------------------------------
def test_install_service_writes_hardened_units_that_systemd_accepts(tmp_path, tiny_registry):
    root = tmp_path / "root"
    store = tmp_path / "store"
    out = json.loads(
        _invoke(
            "edge", "install-service", "--root", str(root), "--store", str(store),
            "--model", "tiny@prod", "--registry", tiny_registry.url, "--host", "0.0.0.0",
            "--executable", STRATO, "--json",
        )
    )  # fmt: skip
    assert out["token_generated"] is True
    serve_path = root / "etc/systemd/system/strato-edge.service"
    pull_path = root / "etc/systemd/system/strato-edge-pull.service"
    assert out["units"] == [str(serve_path), str(pull_path)]
    serve, pull = parse_unit(serve_path.read_text()), parse_unit(pull_path.read_text())
    for unit in (serve, pull):
        service = unit["Service"]
        assert service["User"] == ["strato"] and service["Restart"] == ["on-failure"]
        assert service["EnvironmentFile"] == ["-/etc/strato/edge.env"]
        for directive in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
            assert service[directive] == ["yes"], directive
        assert service["ProtectSystem"] == ["strict"]
        assert service["ReadWritePaths"] == [str(store)]
        assert service["CapabilityBoundingSet"] == [""]  # port 8000: no capability at all
        assert "MemoryDenyWriteExecute" not in service  # CUDA/TensorRT JIT needs W+X pages
    assert pull["Unit"]["PartOf"] == ["strato-edge.service"]
    assert "strato-edge-pull.service" in serve["Unit"]["Wants"]
    assert serve["Install"]["WantedBy"] == ["multi-user.target"]

    env_file = root / "etc/strato/edge.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    token = re.search(r"^STRATO_EDGE_TOKEN=(\S+)$", env_file.read_text(), re.M)
    assert token and len(token.group(1)) >= 32
    assert token.group(1) not in serve_path.read_text()  # the secret stays out of the unit
    sysusers = (root / "usr/lib/sysusers.d/strato.conf").read_text().split()
    assert sysusers[:3] == ["u", "strato", "-"]

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units were parsed and checked above")
    checked = subprocess.run(
        [analyze, "verify", str(serve_path), str(pull_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [
        line for line in checked.stderr.splitlines()
        if "strato-edge" in line and "ignoring" not in line.lower()
    ]  # fmt: skip
    assert checked.returncode == 0 and not problems, checked.stderr


def test_the_units_exec_lines_serve_and_follow_the_registry(tmp_path, tiny_registry):
    root, store, port = tmp_path / "root", tmp_path / "store", free_port()
    _invoke(
        "edge", "install-service", "--root", str(root), "--store", str(store), "--port", str(port),
        "--model", "tiny@prod", "--registry", tiny_registry.url, "--interval", "0.3",
        "--executable", STRATO,
    )  # fmt: skip
    units = root / "etc/systemd/system"
    pull_argv = _exec_argv(parse_unit((units / "strato-edge-pull.service").read_text()))
    serve_argv = _exec_argv(parse_unit((units / "strato-edge.service").read_text()))
    assert pull_argv[:4] == [STRATO, "edge", "pull", "tiny@prod"] and "--watch" in pull_argv
    env = {**os.environ, "STRATO_EDGE_TOKEN": ""}
    pulling = subprocess.Popen(pull_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (store / "tiny" / "1" / "manifest.json").is_file():
            assert time.monotonic() < deadline and pulling.poll() is None, _stop(pulling)
            time.sleep(0.1)
        serving = subprocess.Popen(serve_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, serving)
            assert httpx.get(f"{url}/v2/models/tiny").json()["parameters"]["version"] == "1"
            tiny_registry.promote("tiny", "2", "prod")  # the fleet's rollout: move the alias
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/v2/models/tiny").json()["parameters"]["version"] != "2":
                assert time.monotonic() < deadline, "the unit pair never served tiny:2"
                time.sleep(0.2)
        finally:
            assert _stop(serving) is not None and serving.returncode == 0
    finally:
        _stop(pulling)


def test_install_service_refuses_what_cannot_work(tmp_path):
    result = runner.invoke(
        app, ["edge", "install-service", "--root", str(tmp_path), "--model", "tiny@prod"]
    )
    assert isinstance(result.exception, ConfigError) and "--registry" in str(result.exception)
    result = runner.invoke(
        app, ["edge", "install-service", "--root", str(tmp_path), "--store", "relative/store"]
    )
    assert isinstance(result.exception, ConfigError) and "absolute" in str(result.exception)


def test_a_low_port_gets_only_the_bind_capability(tmp_path):
    _invoke("edge", "install-service", "--root", str(tmp_path), "--port", "80", "--no-gpu")
    unit = parse_unit((tmp_path / "etc/systemd/system/strato-edge.service").read_text())
    assert unit["Service"]["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["Service"]["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert "SupplementaryGroups" not in unit["Service"]
    assert not (tmp_path / "etc/systemd/system/strato-edge-pull.service").exists()


# --- Greengrass ------------------------------------------------------------------------------
def _component(tmp_path: Path, registry: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / "gg"
    return json.loads(
        _invoke(
            "edge", "greengrass-component", "--model", "tiny@prod", "--registry", registry,
            "--artifacts-uri", "s3://fleet-bucket/greengrass", "--output", str(out), "--json",
            *extra,
        )
    )  # fmt: skip


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_greengrass_recipe_is_valid_in_json_and_yaml(tmp_path):
    files = _component(tmp_path, "s3://models/strato", "--component-version", "1.2.3")
    document = json.loads(Path(files["recipe_json"]).read_text())
    errors = [e.message for e in _validator().iter_errors(document)]
    assert not errors, errors
    assert yaml.safe_load(Path(files["recipe_yaml"]).read_text()) == document
    assert Path(files["recipe_yaml"]).name == "com.strato.EdgeServer-1.2.3.yaml"
    manifest = document["Manifests"][0]
    assert set(manifest["Lifecycle"]) == {"Setenv", "Install", "Run"}
    assert [a["Uri"] for a in manifest["Artifacts"]] == [
        "s3://fleet-bucket/greengrass/com.strato.EdgeServer/1.2.3/install.sh",
        "s3://fleet-bucket/greengrass/com.strato.EdgeServer/1.2.3/run.sh",
    ]
    for path in files["artifacts"]:  # the layout the URIs name, scripts that parse
        assert Path(path).parent.parts[-2:] == ("com.strato.EdgeServer", "1.2.3")
        subprocess.run(["sh", "-n", path], check=True)
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["ModelRef"] == "tiny@prod" and defaults["Registry"] == "s3://models/strato"
    # an S3 registry needs AWS credentials on the device: the token exchange service
    assert "aws.greengrass.TokenExchangeService" in document["ComponentDependencies"]


def test_the_schema_refuses_broken_recipes(tmp_path):
    document = json.loads(Path(_component(tmp_path, "/srv/registry")["recipe_json"]).read_text())
    assert "ComponentDependencies" not in document  # a folder registry needs no AWS role
    validator = _validator()
    assert validator.is_valid(document)
    broken = [
        {**document, "ComponentVersion": "1.0"},
        {**document, "recipeFormatVersion": "2020-01-25"},  # keys are case-sensitive
        {**document, "Manifests": [{**document["Manifests"][0], "Artifacts": [{"Uri": "x"}]}]},
        {
            **document,
            "Manifests": [{**document["Manifests"][0], "Lifecycle": {"Run": {"Scrpt": "serve"}}}],
        },
    ]
    for recipe in broken:
        assert not validator.is_valid(recipe), recipe


def _interpolate(value: str, config: dict[str, Any], work: Path, artifacts: Path) -> str:
    value = value.replace("{work:path}", str(work)).replace("{artifacts:path}", str(artifacts))
    return re.sub(r"\{configuration:/(\w+)\}", lambda m: str(config[m.group(1)]), value)


def test_the_component_runs_as_a_nucleus_would_run_it(tmp_path, tiny_registry):
    """Setenv exported and recipe variables interpolated like the nucleus does, Run started:
    the model is pulled, served, follows its alias, and SIGTERM stops both processes."""
    port = free_port()
    files = _component(tmp_path, tiny_registry.url, "--port", str(port), "--interval", "0.3")
    document = json.loads(Path(files["recipe_json"]).read_text())
    config = document["ComponentConfiguration"]["DefaultConfiguration"]
    lifecycle = document["Manifests"][0]["Lifecycle"]
    work, artifacts = tmp_path / "work", Path(files["artifacts"][0]).parent
    work.mkdir()
    env = {k: _interpolate(str(v), config, work, artifacts) for k, v in lifecycle["Setenv"].items()}
    env = {**os.environ, **env, "STRATO_BIN": STRATO}  # the venv Install would have made
    run = shlex.split(_interpolate(lifecycle["Run"]["Script"], config, work, artifacts))
    process = subprocess.Popen(run, cwd=work, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v2/repository/index").json() == []:
            assert time.monotonic() < deadline, "the first pull never got served"
            time.sleep(0.2)
        assert (work / "store" / "tiny" / "1" / "manifest.json").is_file()
        tiny_registry.promote("tiny", "2", "prod")
        while httpx.get(f"{url}/v2/models/tiny").json()["parameters"]["version"] != "2":
            assert time.monotonic() < deadline, "the watcher never moved the device to tiny:2"
            time.sleep(0.2)
    finally:
        output = _stop(process)
    assert process.returncode == 143, output
    time.sleep(0.5)
    listed = subprocess.run(
        ["ps", "-o", "stat=,args=", "-g", str(process.pid)], capture_output=True, text=True
    ).stdout.splitlines()
    alive = [line for line in listed if not line.lstrip().startswith("Z")]
    assert not alive, alive  # no strato left running in the component's process group


def test_greengrass_component_refuses_bad_names(tmp_path):
    result = runner.invoke(
        app,
        [
            "edge", "greengrass-component", "--model", "tiny@prod", "--registry", "/r",
            "--artifacts-uri", "s3://b/p", "--component-version", "v1", "-o", str(tmp_path),
        ],
    )  # fmt: skip
    assert isinstance(result.exception, ConfigError), result.output
    assert "MAJOR.MINOR.PATCH" in str(result.exception)
