"""`strato import` as a new user runs it: a module file in the working folder, user code that fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from strato import ConfigError, Registry
from strato_training import ImportConfig, import_module
from strato_training.module_export import load_module
from torch import nn

STRATO = str(Path(sys.executable).with_name("strato"))

TINY = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


def broken():
    raise RuntimeError("checkpoint not found: weights.pt")
"""


def test_strato_import_finds_the_module_file_in_the_working_folder(tmp_path: Path) -> None:
    """docs/models.md: `python mymodels.py` then `strato import mymodels:TwoHeads` in one folder."""
    (tmp_path / "journey_tiny.py").write_text(TINY)
    np.savez(tmp_path / "x.npz", x=np.ones((2, 3), np.float32))
    env = {k: v for k, v in os.environ.items() if k != "STRATO_REGISTRY"}
    assert str(tmp_path) not in env.get("PYTHONPATH", "")
    done = subprocess.run(
        [STRATO, "import", "journey_tiny:Tiny", "--example", "x.npz", "--name", "tiny"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / ".strato" / "registry" / "tiny" / "1" / "manifest.json").is_file()


def test_a_factory_that_raises_is_a_config_error_that_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "journey_broken.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(ConfigError) as caught:
        load_module("journey_broken:broken")
    assert "journey_broken:broken" in str(caught.value)
    assert "checkpoint not found: weights.pt" in str(caught.value)
    sys.modules.pop("journey_broken", None)


class _Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


def test_an_imported_module_ships_no_exporter_debug_metadata(tmp_path: Path) -> None:
    """The dynamo exporter tags every node with its Python stack trace (this file's path)."""
    examples = {"x": np.ones((2, 3), np.float32)}
    bundle = import_module(
        _Scorer(), examples, ImportConfig(name="scorer"), registry=Registry(tmp_path / "r")
    )
    assert bundle.manifest.framework["exporter"] == "dynamo"
    path = bundle.root / "model.onnx"
    model = onnx.load(str(path))
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)
    assert Path(__file__).name.encode() not in path.read_bytes()
