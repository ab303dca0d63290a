"""`strato edge greengrass-component`: the daemon as an AWS IoT Greengrass v2 component.

Fleets then roll out through Greengrass deployments (thing groups, staged rollout, automatic
rollback), not an engine of ours. The component's Install step makes a venv under the
component's work folder and installs `strato[edge]` into it (with the system site packages, so
JetPack's TensorRT is importable); its Run step pulls the model once, keeps following the
reference with `strato edge pull --watch` and runs `strato edge serve` in the foreground, which
Greengrass supervises. Settings are the component's configuration (`ComponentConfiguration.
DefaultConfiguration`), passed to the scripts as the `STRATO_*` variables the CLI already reads,
so a deployment's configuration merge changes them without a new component version.

Layout written (the one `greengrass-cli deployment create --recipeDir --artifactDir` and
`aws greengrassv2 create-component-version --inline-recipe` read):

    <out>/recipe.json                              the recipe, JSON
    <out>/recipes/<Name>-<Version>.yaml            the same recipe, YAML
    <out>/artifacts/<Name>/<Version>/install.sh    Install lifecycle script
    <out>/artifacts/<Name>/<Version>/run.sh        Run lifecycle script
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato import ConfigError, __version__

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "RECIPE_FORMAT_VERSION",
    "ComponentFiles",
    "ComponentSpec",
    "recipe",
    "to_yaml",
    "write_component",
]

RECIPE_FORMAT_VERSION = "2020-01-25"
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")

INSTALL_SH = """\
#!/bin/sh
# Install lifecycle (Greengrass runs it in the component's work folder): a venv with strato[edge].
# --system-site-packages: JetPack's TensorRT and NVIDIA's onnxruntime-gpu stay importable.
set -eu
VENV="${STRATO_VENV:-$PWD/venv}"
if [ ! -x "$VENV/bin/strato" ] || \\
   [ "$("$VENV/bin/strato" --version 2>/dev/null)" != "strato $STRATO_VERSION" ]; then
  python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade "$STRATO_PIP_REQUIREMENT"
fi
"$VENV/bin/strato" --version
"""

RUN_SH = """\
#!/bin/sh
# Run lifecycle: one pull (so the store has a model), `edge pull --watch` in the background
# (restarted if it ever exits), `edge serve` in the foreground: Greengrass supervises it and
# restarts the component when it fails. The CLI reads STRATO_REGISTRY, STRATO_EDGE_STORE,
# STRATO_EDGE_TOKEN and STRATO_S3_ENDPOINT from the environment the recipe's Setenv sets.
set -u
STRATO="${STRATO_BIN:-${STRATO_VENV:-$PWD/venv}/bin/strato}"
mkdir -p "$STRATO_EDGE_STORE"
"$STRATO" edge pull "$STRATO_MODEL_REF" || echo "first pull failed; serving what is installed" >&2
( trap 'kill "$PULL" 2>/dev/null; wait "$PULL"; exit 0' TERM
  while :; do
    "$STRATO" edge pull "$STRATO_MODEL_REF" --watch --interval "$STRATO_PULL_INTERVAL" &
    PULL=$!
    wait "$PULL"
    sleep 5
  done ) &
WATCHER=$!
"$STRATO" edge serve --host "$STRATO_EDGE_HOST" --port "$STRATO_EDGE_PORT" &
SERVER=$!
stop() { kill -TERM "$SERVER" "$WATCHER" 2>/dev/null; wait "$SERVER" "$WATCHER"; }
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
wait "$SERVER"
STATUS=$?
kill -TERM "$WATCHER" 2>/dev/null
wait "$WATCHER"
exit "$STATUS"
"""


@dataclass(frozen=True)
class ComponentSpec:
    """One component version: which model it serves from which registry, and where."""

    model: str
    registry: str
    artifacts_uri: str
    name: str = "com.strato.EdgeServer"
    version: str = "1.0.0"
    host: str = "127.0.0.1"
    port: int = 8000
    interval_s: float = 30.0
    pip_requirement: str = f"strato[edge]=={__version__}"
    s3_endpoint: str = ""
    publisher: str = "strato"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"component name {self.name!r}: letters, digits, '_', '-', '.'")
        if not _SEMVER.match(self.version):
            raise ConfigError(f"component version {self.version!r} is not MAJOR.MINOR.PATCH")
        if not self.model or not self.registry:
            raise ConfigError("a component needs a model reference and a registry")
        if not self.artifacts_uri.startswith("s3://"):
            raise ConfigError(f"artifacts URI must be s3://bucket/prefix: {self.artifacts_uri!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.interval_s <= 0:
            raise ConfigError(f"the pull interval must be > 0 seconds, got {self.interval_s}")

    @property
    def artifact_prefix(self) -> str:
        return f"{self.artifacts_uri.rstrip('/')}/{self.name}/{self.version}"


def _configuration(spec: ComponentSpec) -> dict[str, Any]:
    return {
        "ModelRef": spec.model,
        "Registry": spec.registry,
        "Host": spec.host,
        "Port": spec.port,
        "PullIntervalSeconds": spec.interval_s,
        "Token": "",
        "S3Endpoint": spec.s3_endpoint,
        "PipRequirement": spec.pip_requirement,
    }


def recipe(spec: ComponentSpec) -> dict[str, Any]:
    """The component recipe (format 2020-01-25) as a dict, ready for JSON or YAML."""
    setenv = {
        "STRATO_MODEL_REF": "{configuration:/ModelRef}",
        "STRATO_REGISTRY": "{configuration:/Registry}",
        "STRATO_EDGE_STORE": "{work:path}/store",
        "STRATO_VENV": "{work:path}/venv",
        "STRATO_EDGE_HOST": "{configuration:/Host}",
        "STRATO_EDGE_PORT": "{configuration:/Port}",
        "STRATO_PULL_INTERVAL": "{configuration:/PullIntervalSeconds}",
        "STRATO_EDGE_TOKEN": "{configuration:/Token}",
        "STRATO_S3_ENDPOINT": "{configuration:/S3Endpoint}",
        "STRATO_PIP_REQUIREMENT": "{configuration:/PipRequirement}",
        "STRATO_VERSION": __version__,
    }
    artifacts = [
        {
            "Uri": f"{spec.artifact_prefix}/{script}",
            "Unarchive": "NONE",
            "Permission": {"Read": "OWNER", "Execute": "OWNER"},
        }
        for script in ("install.sh", "run.sh")
    ]
    manifest: dict[str, Any] = {
        "Name": "Linux",
        "Platform": {"os": "linux"},
        "Lifecycle": {
            "Setenv": setenv,
            "Install": {"Script": "sh {artifacts:path}/install.sh", "Timeout": 900},
            "Run": {"Script": "sh {artifacts:path}/run.sh"},
        },
        "Artifacts": artifacts,
    }
    document: dict[str, Any] = {
        "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
        "ComponentName": spec.name,
        "ComponentVersion": spec.version,
        "ComponentType": "aws.greengrass.generic",
        "ComponentDescription": (
            f"strato edge daemon serving {spec.model} (Open Inference Protocol v2 on port "
            f"{spec.port}), following it in {spec.registry}."
        ),
        "ComponentPublisher": spec.publisher,
        "ComponentConfiguration": {"DefaultConfiguration": _configuration(spec)},
        "Manifests": [manifest],
    }
    if spec.registry.startswith("s3://"):
        # AWS credentials for the registry (and the artifacts) come from the device's token
        # exchange role; the component talks to no Greengrass IPC service, so no accessControl.
        document["ComponentDependencies"] = {
            TOKEN_EXCHANGE: {"VersionRequirement": "^2.0.0", "DependencyType": "HARD"}
        }
    return document


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for a JSON-like value (no PyYAML on the device); strings are quoted
    JSON strings, which YAML reads as the same strings."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        lines = []
        for key, item in value.items():
            head = f"{pad}{_key(str(key))}:"
            if isinstance(item, dict | list) and item:
                lines.append(head + "\n" + to_yaml(item, indent + 2))
            else:
                lines.append(f"{head} {_scalar(item)}\n")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = to_yaml(item, indent + 2)
                lines.append(f"{pad}- " + nested[indent + 2 :])
            else:
                lines.append(f"{pad}- {_scalar(item)}\n")
        return "".join(lines)
    return pad + _scalar(value) + "\n"


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


@dataclass(frozen=True)
class ComponentFiles:
    """Where `write_component` put the recipe and the artifacts."""

    recipe_json: Path
    recipe_yaml: Path
    artifacts: list[Path]


def write_component(spec: ComponentSpec, out: Path) -> ComponentFiles:
    """Write the recipe (JSON and YAML) and the artifact scripts under `out`."""
    document = recipe(spec)
    out.mkdir(parents=True, exist_ok=True)
    recipe_json = out / "recipe.json"
    recipe_json.write_text(json.dumps(document, indent=2) + "\n")
    recipe_yaml = out / "recipes" / f"{spec.name}-{spec.version}.yaml"
    recipe_yaml.parent.mkdir(parents=True, exist_ok=True)
    recipe_yaml.write_text(to_yaml(document))
    folder = out / "artifacts" / spec.name / spec.version
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for script, text in (("install.sh", INSTALL_SH), ("run.sh", RUN_SH)):
        path = folder / script
        path.write_text(text)
        path.chmod(0o755)
        artifacts.append(path)
    return ComponentFiles(recipe_json, recipe_yaml, artifacts)
