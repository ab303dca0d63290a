"""What this device can run: its fingerprint (CPU, GPU compute capability, TensorRT version,
ONNX Runtime providers), as the engine keying and `strato edge info` read it."""

from __future__ import annotations

from ._device import (
    FINGERPRINT_KEYS,
    compute_capability,
    fingerprint,
    format_fingerprint,
    tensorrt_version,
)

__all__ = [
    "FINGERPRINT_KEYS",
    "compute_capability",
    "fingerprint",
    "format_fingerprint",
    "tensorrt_version",
]
