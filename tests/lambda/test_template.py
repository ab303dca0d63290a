"""template.yaml and samconfig.toml: what the stack promises, checked on the files themselves.

cfn-lint runs when it is installed (`make iac-check` adds sam validate --lint and checkov).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - mypy checks as 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: `!Ref X` -> {"Ref": X}, `!Sub s` -> {"Fn::Sub": s}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader with CFN tags


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_the_deployment_preference_is_a_parameter_all_at_once_in_dev_canary_in_prod(template):
    parameter = template["Parameters"]["DeploymentPreferenceType"]
    assert parameter["Default"] == "AllAtOnce"
    assert "Canary10Percent5Minutes" in parameter["AllowedValues"]
    function = template["Resources"]["StratoFunction"]["Properties"]
    assert function["DeploymentPreference"]["Type"] == {"Ref": "DeploymentPreferenceType"}
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    dev = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    prod = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "Stage=dev" in dev and "DeploymentPreferenceType=AllAtOnce" in dev
    assert "Stage=prod" in prod and "DeploymentPreferenceType=Canary10Percent5Minutes" in prod


def test_every_alarm_watches_this_stage_only(template):
    """Lambda alarms name the function (and its alias), API alarms this API, the handler's own
    metrics live in a namespace per stage: another stage's errors never page this one."""
    function_env = template["Resources"]["StratoFunction"]["Properties"]["Environment"]
    namespace = function_env["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    assert namespace == {"Fn::Sub": "Strato/${Stage}"}
    alarms = _alarms(template)
    assert len(alarms) >= 5
    for name, alarm in alarms.items():
        dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
        if alarm["Namespace"] == "AWS/Lambda":
            assert dims["FunctionName"] == {"Ref": "StratoFunction"}, name
            assert dims["Resource"] == {"Fn::Sub": "${StratoFunction}:live"}, name
        elif alarm["Namespace"] == "AWS/ApiGateway":
            assert dims["ApiId"] == {"Ref": "HttpApi"}, name
        else:
            assert alarm["Namespace"] == namespace, name
    rollback = template["Resources"]["StratoFunction"]["Properties"]["DeploymentPreference"]
    assert {a["Ref"] for a in rollback["Alarms"]} == {"FunctionErrorsAlarm", "InternalErrorsAlarm"}


def _environment_names(template: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        names |= set(props.get("Environment", {}).get("Variables", {}))
        names |= set(props.get("PrimaryContainer", {}).get("Environment", {}))
    return names


def test_every_setting_the_template_passes_is_read_by_some_code(template):
    code = "\n".join(
        path.read_text()
        for folder in ("sdk", "edge", "lambda")
        for path in (REPO / folder).rglob("*.py")
    )
    names = _environment_names(template)
    assert "STRATO_MODEL_URI" in names and "STRATO_LOG_FORMAT" not in names
    for name in names:
        if name.startswith("POWERTOOLS_"):
            continue  # read by aws-lambda-powertools itself
        assert re.search(rf"\b{name}\b", code), f"{name} is set in template.yaml but no code reads it"


def test_cfn_lint_is_clean():
    lint = shutil.which("cfn-lint")
    if lint is None:
        pytest.skip("cfn-lint is not installed here (make iac-check installs it in .venv-iac)")
    done = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
