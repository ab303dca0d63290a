"""`strato quantize --data` refuses an .npz that holds more than the model's inputs, as
`strato predict -i` does (an extra array is most often the targets put in the wrong file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import support
from strato import ConfigError, Registry
from strato_training.quantize_data import QuantizeData

STRATO = str(Path(sys.executable).with_name("strato"))


def test_an_extra_array_is_a_config_error_naming_it(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    np.savez(tmp_path / "rows.npz", x=rows, y=rows[:, 0])
    with pytest.raises(ConfigError) as caught:
        QuantizeData.load(tmp_path / "rows.npz", input_names=["x"])
    assert "not inputs: ['y']" in str(caught.value) and "--targets" in str(caught.value)


def test_strato_quantize_refuses_an_extra_array_without_traceback(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.publish(support.build_tiny_bundle(tmp_path / "v1"))
    images = np.random.default_rng(0).random((24, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "rows.npz", input=images, labels=np.zeros(24, np.int64))
    done = subprocess.run(
        [STRATO, "quantize", "tiny:1", "--data", "rows.npz", "--registry", "registry"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "not inputs: ['labels']" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "registry" / "tiny" / "2").exists()
