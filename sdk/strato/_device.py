"""This device's fingerprint: what decides which TensorRT plan (if any) it can run.

A TensorRT plan runs only on the TensorRT version and GPU (compute capability) that built it,
so the edge daemon reads these once and matches plan keys against them. Every probe is lazy and
tolerant: on a machine without a GPU each missing item is `None` and `fingerprint()["absent"]`
says why.

>>> fp = fingerprint()
>>> fp["tensorrt"], fp["compute_capability"], fp["absent"].get("tensorrt")
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "FINGERPRINT_KEYS",
    "compute_capability",
    "fingerprint",
    "format_fingerprint",
    "tensorrt_version",
]

FINGERPRINT_KEYS = (
    "jetson_model",
    "l4t",
    "jetpack",
    "gpu",
    "compute_capability",
    "cuda",
    "tensorrt",
    "onnxruntime",
    "onnxruntime_providers",
)

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CUDA_VERSION_JSON = Path("/usr/local/cuda/version.json")

# Jetson modules have no nvidia-smi on older JetPacks: their compute capability is fixed by the SoC.
JETSON_COMPUTE_CAPABILITY = (
    ("orin", "8.7"),
    ("xavier", "7.2"),
    ("tx2", "6.2"),
    ("nano", "5.3"),
    ("tx1", "5.3"),
    ("thor", "11.0"),
)

_PROBE_TIMEOUT_S = 5.0


def _run(argv: list[str]) -> str | None:
    """stdout of a short command, or None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _jetson_model() -> str | None:
    model = _read_text(DEVICE_TREE_MODEL)
    return model if model and ("jetson" in model.lower() or "nvidia" in model.lower()) else None


def _l4t() -> str | None:
    """`# R36 (release), REVISION: 4.0, ...` → ``36.4.0``."""
    text = _read_text(TEGRA_RELEASE)
    if not text:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else text.splitlines()[0]


def _jetpack() -> str | None:
    return _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])


def tensorrt_version() -> str | None:
    """The TensorRT Python bindings' version, or None where TensorRT is not installed."""
    try:
        import tensorrt
    except Exception:  # ImportError, or a broken install raising OSError on its libraries
        return None
    return str(tensorrt.__version__)


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _cuda_runtime_version() -> str | None:
    try:
        cudart = _cudart()
        err, version = cudart.cudaRuntimeGetVersion()
    except Exception:
        return None
    if getattr(err, "value", err) != 0:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def _cuda_version() -> str | None:
    found = _cuda_runtime_version()
    if found:
        return found
    text = _read_text(CUDA_VERSION_JSON)
    if text:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    smi = _run(["nvidia-smi"])
    match = re.search(r"CUDA Version:\s*([\d.]+)", smi or "")
    return f"{match.group(1)} (driver)" if match else None


def _nvidia_smi_gpu() -> tuple[str | None, str | None]:
    out = _run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if not out:
        return None, None
    name, _, cap = out.splitlines()[0].partition(",")
    return name.strip() or None, cap.strip() or None


def _cuda_device() -> tuple[str | None, str | None]:
    """(name, compute capability) of GPU 0 through cuda-python, or (None, None)."""
    try:
        cudart = _cudart()
        err, props = cudart.cudaGetDeviceProperties(0)
    except Exception:
        return None, None
    if getattr(err, "value", err) != 0:
        return None, None
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    return (str(name).strip("\x00 ") or None), f"{props.major}.{props.minor}"


def _cuda_compute_capability() -> str | None:
    return _cuda_device()[1]


def compute_capability(jetson_model: str | None = None) -> str | None:
    """GPU 0's compute capability (``8.7``): nvidia-smi, then CUDA, then the Jetson SoC table."""
    _, cap = _nvidia_smi_gpu()
    cap = cap or _cuda_compute_capability()
    if cap:
        return cap
    model = (jetson_model or _jetson_model() or "").lower()
    for needle, known in JETSON_COMPUTE_CAPABILITY:
        if needle in model:
            return known
    return None


def _onnxruntime() -> tuple[str | None, list[str] | None]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None
    return str(ort.__version__), list(ort.get_available_providers())


_ABSENT_REASONS = {
    "jetson_model": f"not a Jetson ({DEVICE_TREE_MODEL} missing or not NVIDIA)",
    "l4t": f"no L4T ({TEGRA_RELEASE} missing)",
    "jetpack": "no nvidia-jetpack package (dpkg)",
    "gpu": "no NVIDIA GPU found (nvidia-smi missing or found none)",
    "compute_capability": "no CUDA GPU found (nvidia-smi, cuda-python, Jetson model)",
    "cuda": "no CUDA runtime found (cuda-python, /usr/local/cuda, nvidia-smi)",
    "tensorrt": "TensorRT Python bindings not installed (import tensorrt failed)",
    "onnxruntime": "onnxruntime not installed",
    "onnxruntime_providers": "onnxruntime not installed",
}


def fingerprint() -> dict[str, Any]:
    """What this device offers for serving; absent items are None with a reason in `absent`.

    Keys: jetson_model, l4t, jetpack, gpu, compute_capability, cuda, tensorrt, onnxruntime,
    onnxruntime_providers, platform, python, absent.
    """
    jetson = _jetson_model()
    gpu, cap = _nvidia_smi_gpu()
    ort_version, providers = _onnxruntime()
    found: dict[str, Any] = {
        "jetson_model": jetson,
        "l4t": _l4t(),
        "jetpack": _jetpack(),
        "gpu": gpu or jetson or _cuda_device()[0],
        "compute_capability": cap or compute_capability(jetson),
        "cuda": _cuda_version(),
        "tensorrt": tensorrt_version(),
        "onnxruntime": ort_version,
        "onnxruntime_providers": providers,
    }
    found["platform"] = f"{platform.system()} {platform.machine()} {platform.release()}"
    found["python"] = sys.version.split()[0]
    found["absent"] = {key: _ABSENT_REASONS[key] for key in FINGERPRINT_KEYS if found[key] is None}
    return found


def format_fingerprint(fp: dict[str, Any]) -> str:
    """Aligned `key: value` lines, absent items as ``absent (why)``."""
    absent = fp.get("absent", {})
    width = max(len(key) for key in (*FINGERPRINT_KEYS, "platform", "python"))
    lines = []
    for key in (*FINGERPRINT_KEYS, "platform", "python"):
        value = fp.get(key)
        if value is None:
            shown = f"absent ({absent.get(key, 'not found')})"
        elif isinstance(value, list):
            shown = ", ".join(str(v) for v in value) or "none"
        else:
            shown = str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
