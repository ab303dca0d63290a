"""The device fingerprint: what it finds, and on a machine without a GPU, what it says is absent."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from strato import _device
from strato._device import FINGERPRINT_KEYS, compute_capability, fingerprint, format_fingerprint

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_NVIDIA_SMI = shutil.which("nvidia-smi") is not None


def test_fingerprint_has_every_key_and_explains_each_absence() -> None:
    fp = fingerprint()
    for key in (*FINGERPRINT_KEYS, "platform", "python", "absent"):
        assert key in fp
    for key in FINGERPRINT_KEYS:
        assert (fp[key] is None) == (key in fp["absent"])
    json.dumps(fp)  # the edge daemon serves it as JSON
    assert fp["onnxruntime"]  # installed in every strato runtime
    assert "CPUExecutionProvider" in fp["onnxruntime_providers"]


@pytest.mark.skipif(HAS_TENSORRT or HAS_NVIDIA_SMI, reason="checks a machine without GPU software")
def test_cpu_machine_says_what_is_absent() -> None:
    fp = fingerprint()
    assert fp["tensorrt"] is None and "TensorRT" in fp["absent"]["tensorrt"]
    assert fp["compute_capability"] is None
    text = format_fingerprint(fp)
    assert "tensorrt" in text and "absent (TensorRT Python bindings not installed" in text
    assert "onnxruntime_providers" in text and "CPUExecutionProvider" in text


def test_format_fingerprint_lists_values_and_absences() -> None:
    fp = {
        "jetson_model": "NVIDIA Jetson Orin Nano Developer Kit",
        "l4t": "36.4.0",
        "jetpack": None,
        "onnxruntime_providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"],
        "absent": {"jetpack": "no nvidia-jetpack package (dpkg)"},
    }
    lines = format_fingerprint(fp).splitlines()
    assert any(line.startswith("l4t") and line.endswith("36.4.0") for line in lines)
    assert any("jetpack" in line and "absent (no nvidia-jetpack" in line for line in lines)
    assert any("TensorrtExecutionProvider, CPUExecutionProvider" in line for line in lines)
    assert any(line.startswith("cuda") and "absent (not found)" in line for line in lines)


def test_jetson_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    release = tmp_path / "nv_tegra_release"
    release.write_text(
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n"
    )
    monkeypatch.setattr(_device, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(_device, "TEGRA_RELEASE", release)
    fp = fingerprint()
    assert fp["jetson_model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert fp["l4t"] == "36.4.0"
    assert fp["gpu"]
    if not HAS_NVIDIA_SMI:  # no GPU to ask: the SoC table answers
        assert compute_capability() in ("8.7", fp["compute_capability"])


@pytest.mark.parametrize(
    ("model", "capability"),
    [
        ("NVIDIA Jetson AGX Xavier", "7.2"),
        ("NVIDIA Jetson Nano Developer Kit", "5.3"),
        ("NVIDIA Jetson AGX Orin", "8.7"),
    ],
)
def test_jetson_compute_capability_table(
    model: str, capability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_device, "_nvidia_smi_gpu", lambda: (None, None))
    monkeypatch.setattr(_device, "_cuda_compute_capability", lambda: None)
    assert compute_capability(model) == capability


def test_fingerprint_imports_no_torch_or_tensorrt_eagerly() -> None:
    code = (
        "import sys, strato._device as d; d.fingerprint(); "
        "print(sorted(m for m in ('torch', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
