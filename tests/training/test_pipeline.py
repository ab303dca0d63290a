"""The pipeline as plain typed steps: each returns a frozen result the next one takes; the
modules of strato_training import each other without a cycle, and none imports boto3."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import strato_training
from strato import ConfigError, Registry
from strato_training.pipeline import (
    Exported,
    Published,
    QuickstartConfig,
    Served,
    Spine,
    optimize_step,
    predict_step,
    run_spine,
)
from strato_training.trainer import TrainConfig

PACKAGE = Path(strato_training.__file__).parent


@pytest.fixture(scope="module")
def spine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Spine, Registry, list[str]]:
    root = tmp_path_factory.mktemp("spine")
    registry = Registry(root / "registry")
    seen: list[str] = []
    config = QuickstartConfig(
        workdir=root / "work",
        name="spine-mlp",
        train=TrainConfig(epochs=4, patience=0, threads=1),
        progress=False,
    )
    done = run_spine(config, registry, on_step=lambda name, text, seconds: seen.append(name))
    return done, registry, seen


def test_the_spine_runs_its_steps_in_order_and_returns_typed_results(spine) -> None:
    done, registry, seen = spine
    assert seen == ["data", "train", "evaluate", "export", "parity", "publish"]
    assert isinstance(done.exported, Exported) and isinstance(done.published, Published)
    assert done.exported.parity.max_abs_diff <= 1e-4
    assert str(done.published.ref) == "spine-mlp:1"
    assert done.published.bundle.manifest.preprocessing["resize"] == [28, 28]
    assert registry.open("spine-mlp:1").manifest.artifact("model.onnx").size > 0
    assert done.report.accuracy > 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.published.ref = None  # type: ignore[misc]


def test_predict_step_scores_the_test_split_through_client_local(spine) -> None:
    done, registry, _ = spine
    served = predict_step(registry, done.published.ref, done.dataset, latency_samples=5)
    assert isinstance(served, Served)
    assert served.served_by == "local" and served.model == "spine-mlp:1"
    assert served.latency_samples == 5 and served.p50_latency_ms > 0
    assert served.accuracy == pytest.approx(done.report.accuracy, abs=0.01)


def test_optimize_step_publishes_the_next_version_and_moves_prod(spine) -> None:
    done, registry, _ = spine
    optimized = optimize_step(registry, done.published.ref, done.dataset)
    assert str(optimized.ref) == "spine-mlp:2"
    assert optimized.summary["from"] == "spine-mlp:1"
    assert str(registry.resolve("spine-mlp@prod")) == "spine-mlp:2"
    manifest = registry.manifest("spine-mlp:2")
    assert manifest.extra["parent"] == "spine-mlp:1"
    assert manifest.calibration["cascade_threshold"] > 0


def test_quickstart_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="atol"):
        QuickstartConfig(workdir=Path("w"), atol=-1)
    with pytest.raises(ConfigError, match="latency_samples"):
        QuickstartConfig(workdir=Path("w"), latency_samples=0)
    with pytest.raises(ConfigError):
        QuickstartConfig(workdir=Path("w"), name="bad/name")


def _imported_names(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _imports(path: Path) -> set[str]:
    """strato_training modules `path` imports, at top level or inside functions."""
    names = _imported_names(path)
    return {n.split(".")[1] for n in names if n.startswith("strato_training.")}


def test_strato_training_has_no_import_cycle_and_no_boto3() -> None:
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for path in PACKAGE.glob("*.py"):
        imported = _imported_names(path)
        assert not [n for n in imported if n.split(".")[0] in ("boto3", "botocore")], path.name

    def visit(module: str, trail: tuple[str, ...]) -> None:
        for target in graph.get(module, ()):
            assert target not in trail, f"import cycle: {' → '.join((*trail, target))}"
            visit(target, (*trail, target))

    for module in graph:
        visit(module, (module,))


def test_every_public_name_of_strato_training_resolves() -> None:
    for name in strato_training.__all__:
        assert getattr(strato_training, name) is not None, name
    assert strato_training.import_onnx.__module__ == "strato_training.importer"


def test_strato_training_uses_only_public_strato_names() -> None:
    for path in PACKAGE.glob("*.py"):
        private = [n for n in _imported_names(path) if n.startswith("strato._")]
        assert not private, f"{path.name} imports {private}"
