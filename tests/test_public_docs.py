"""Every public name has a docstring: the exported classes and functions of strato's public
modules and of the sister packages, and the public methods and properties of exported classes."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "strato",
    "strato.cli",
    "strato.device",
    "strato.engines",
    "strato.policies",
    "strato.serving",
    "strato.wire",
    "strato_edge",
    "strato_lambda",
    "strato_training",
]


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = []
    for name in getattr(module, "__all__", []):
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not (value.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(value):
            continue
        for attr, member in vars(value).items():
            if attr.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if isinstance(target, staticmethod | classmethod):
                target = target.__func__
            if inspect.isfunction(target) and not (target.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_names_have_docstrings(module_name: str) -> None:
    assert _undocumented(module_name) == []
