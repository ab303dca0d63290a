"""Issue 11: STRATO_TRUSTED_KEYS and STRATO_S3_ENDPOINT are each read in exactly one place
(`strato._settings`), explicit argument > environment > default."""

from __future__ import annotations

import ast
from pathlib import Path

from strato._settings import s3_endpoint, trusted_keys_spec

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"STRATO_TRUSTED_KEYS", "STRATO_S3_ENDPOINT", "STRATO_REGISTRY", "STRATO_ORT_THREADS"}


def _reads(tree: ast.AST) -> list[str]:
    """Environment reads of NAMES: os.environ.get / os.getenv / environ[...] / typer envvar=."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            first = node.args[0] if node.args else None
            if name in ("get", "getenv") and isinstance(first, ast.Constant):
                found.append(str(first.value))
            found += [
                str(k.value.value)
                for k in node.keywords
                if k.arg == "envvar" and isinstance(k.value, ast.Constant)
            ]
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
        ):
            found.append(str(node.slice.value))
    return [name for name in found if name in NAMES]


def test_each_setting_is_read_in_one_place():
    readers: dict[str, list[str]] = {name: [] for name in NAMES}
    for package in ("sdk", "edge", "lambda", "training"):
        for path in (ROOT / package).rglob("*.py"):
            for name in _reads(ast.parse(path.read_text())):
                readers[name].append(str(path.relative_to(ROOT)))
    assert readers == {name: [] for name in NAMES}, readers  # _settings reads via constants
    settings = (ROOT / "sdk/strato/_settings.py").read_text()
    assert 'TRUSTED_KEYS_ENV = "STRATO_TRUSTED_KEYS"' in settings
    assert 'S3_ENDPOINT_ENV = "STRATO_S3_ENDPOINT"' in settings
    assert 'REGISTRY_ENV = "STRATO_REGISTRY"' in settings
    assert 'ORT_THREADS_ENV = "STRATO_ORT_THREADS"' in settings


def test_explicit_beats_environment_beats_default(monkeypatch):
    monkeypatch.delenv("STRATO_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("STRATO_TRUSTED_KEYS", raising=False)
    assert s3_endpoint() is None and trusted_keys_spec() is None
    monkeypatch.setenv("STRATO_S3_ENDPOINT", "http://env:9000")
    monkeypatch.setenv("STRATO_TRUSTED_KEYS", "env.pub")
    assert s3_endpoint() == "http://env:9000" and trusted_keys_spec() == "env.pub"
    assert s3_endpoint("http://arg:9000") == "http://arg:9000"
    assert trusted_keys_spec("arg.pub") == "arg.pub"
    monkeypatch.setenv("STRATO_S3_ENDPOINT", "  ")
    assert s3_endpoint() is None


def test_registry_and_ort_threads_resolve_in_order(monkeypatch):
    import pytest
    from strato import ConfigError
    from strato._settings import ort_threads, registry_root

    monkeypatch.delenv("STRATO_REGISTRY", raising=False)
    monkeypatch.delenv("STRATO_ORT_THREADS", raising=False)
    assert registry_root() == ".strato/registry" and ort_threads() is None
    monkeypatch.setenv("STRATO_REGISTRY", "s3://env/prefix")
    monkeypatch.setenv("STRATO_ORT_THREADS", "3")
    assert registry_root() == "s3://env/prefix" and ort_threads() == 3
    assert registry_root("arg-reg") == "arg-reg" and ort_threads(2) == 2
    monkeypatch.setenv("STRATO_ORT_THREADS", "lots")
    with pytest.raises(ConfigError, match="STRATO_ORT_THREADS"):
        ort_threads()
