"""TensorRT plans: keys, matching against this device, and the engine that runs a matching plan.

A plan is keyed by sha256(source ONNX) + TensorRT version + GPU compute capability + precision
and lives in the bundle as ``engines/<key>.plan`` (artifact kind ``tensorrt``). A plan whose key
does not match the device is never deserialized: `load_matching_plan` raises `EngineMismatch`
and `load_engine` serves ONNX Runtime instead. `tensorrt` and the CUDA bindings (cuda-python,
which JetPack ships) are imported only when a matching plan is actually loaded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato._errors import EngineMismatch, InvalidInput

from .base import Engine

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from strato._bundle import Artifact, Bundle

__all__ = [
    "PLAN_DIR",
    "PlanMatch",
    "TensorRTEngine",
    "device_fingerprint",
    "engine_key",
    "load_matching_plan",
    "plan_matches",
    "plan_path",
]

log = logging.getLogger("strato.engine")

PLAN_DIR = "engines"
# Without an explicit precision, the safest plan first: fp16 keeps fp32 accuracy on every model
# we ship; int8 plans come from QDQ models that passed the accuracy gate on ONNX Runtime.
_PRECISION_ORDER = ("fp16", "int8", "fp32")


def engine_key(onnx_sha256: str, trt_version: str, compute_capability: str, precision: str) -> str:
    """The 24-hex-digit key of a plan: what must all match for the plan to run on a device."""
    text = f"{onnx_sha256}|{trt_version}|{compute_capability}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def plan_path(key: str) -> str:
    """Where the plan of engine key `key` lives inside a bundle."""
    return f"{PLAN_DIR}/{key}.plan"


@dataclass(frozen=True)
class PlanMatch:
    """Whether a plan can run here; falsy with the `reason` when it cannot."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def device_fingerprint() -> dict[str, Any]:
    """This device's fingerprint (a seam the tests replace to pose as a Jetson)."""
    from strato._device import fingerprint

    return fingerprint()


def plan_matches(
    artifact: Artifact, fingerprint: Mapping[str, Any], *, onnx_sha256s: set[str] | None = None
) -> PlanMatch:
    """Does `artifact`'s key match this device? Pure: reads only the artifact and fingerprint.

    `onnx_sha256s`, when given, are the bundle's ONNX hashes: a plan built from an ONNX the
    bundle no longer holds is stale even if the device matches.
    """
    meta = artifact.tensorrt or {}
    if artifact.kind != "tensorrt" or not meta:
        return PlanMatch(False, f"{artifact.path} is not a TensorRT plan artifact")
    missing = [
        k for k in ("onnx_sha256", "version", "compute_capability", "precision") if not meta.get(k)
    ]
    if missing:
        return PlanMatch(False, f"{artifact.path}: plan metadata lacks {missing}")
    here_trt = fingerprint.get("tensorrt")
    here_cap = fingerprint.get("compute_capability")
    if not here_trt:
        return PlanMatch(False, "TensorRT is absent on this device")
    if str(meta["version"]) != str(here_trt):
        return PlanMatch(
            False, f"plan built with TensorRT {meta['version']}, device has {here_trt}"
        )
    if not here_cap:
        return PlanMatch(False, "no GPU compute capability found on this device")
    if str(meta["compute_capability"]) != str(here_cap):
        return PlanMatch(
            False,
            f"plan built for compute capability {meta['compute_capability']}, device is {here_cap}",
        )
    key = engine_key(
        meta["onnx_sha256"], meta["version"], meta["compute_capability"], meta["precision"]
    )
    if meta.get("key", key) != key or artifact.path != plan_path(key):
        return PlanMatch(False, f"{artifact.path}: stored key does not match its metadata {key}")
    if onnx_sha256s is not None and meta["onnx_sha256"] not in onnx_sha256s:
        return PlanMatch(False, f"{artifact.path} was built from an ONNX this bundle does not hold")
    return PlanMatch(True)


def _candidates(bundle: Bundle, precision: str | None) -> list[Artifact]:
    plans = bundle.models("tensorrt")
    if precision is not None:
        return [p for p in plans if (p.tensorrt or {}).get("precision", p.precision) == precision]
    rank = {p: i for i, p in enumerate(_PRECISION_ORDER)}
    return sorted(plans, key=lambda p: rank.get(str(p.precision), len(rank)))


def load_matching_plan(
    bundle: Bundle, precision: str | None = None, *, fingerprint: Mapping[str, Any] | None = None
) -> Engine | None:
    """A `TensorRTEngine` for the first plan whose key matches this device.

    None when the bundle has no plan (of `precision`); `EngineMismatch` listing every plan's
    reason when none matches; ImportError/OSError when TensorRT or CUDA cannot be loaded.
    """
    plans = _candidates(bundle, precision)
    if not plans:
        return None
    here = dict(fingerprint) if fingerprint is not None else device_fingerprint()
    onnx_hashes = {a.sha256 for a in bundle.models("onnx")}
    reasons = []
    for plan in plans:
        match = plan_matches(plan, here, onnx_sha256s=onnx_hashes)
        if match:
            return TensorRTEngine(bundle, plan)
        reasons.append(match.reason)
    raise EngineMismatch(
        f"{bundle.ref}: no TensorRT plan matches this device: " + "; ".join(reasons)
    )


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6
    return cudart


def _check(result: Any) -> Any:
    """cuda-python returns (error, *values); raise on a non-zero error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if getattr(err, "value", err) != 0:
        raise OSError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


class _DeviceBuffer:
    """A growable CUDA allocation (reused across calls; grows to the largest batch seen)."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(_check(self._cudart.cudaMalloc(max(nbytes, 1))))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFree(self.ptr)
            self.ptr, self.nbytes = 0, 0


class TensorRTEngine(Engine):
    """Runs a plan with the TensorRT 10 name-based API (`set_input_shape`, `set_tensor_address`,
    `execute_async_v3`) on one CUDA stream; host↔device copies via cuda-python."""

    kind = "tensorrt"

    def __init__(self, bundle: Bundle, artifact: Artifact) -> None:
        import tensorrt as trt

        self.bundle = bundle
        self.artifact = artifact
        self._trt = trt
        self._cuda = _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        # the very bytes that were hashed: a plan swapped after verification is never loaded
        self._engine = self._runtime.deserialize_cuda_engine(bundle.read_verified(artifact))
        if self._engine is None:
            raise EngineMismatch(f"{bundle.ref}: TensorRT could not deserialize {artifact.path}")
        self._context = self._engine.create_execution_context()
        self._stream = _check(self._cuda.cudaStreamCreate())
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._input_names = [n for n in names if is_input[n]]
        self._output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: trt.nptype(self._engine.get_tensor_dtype(n)) for n in names}
        self._buffers = {n: _DeviceBuffer(self._cuda) for n in names}
        self._lock = threading.Lock()
        manifest = bundle.manifest
        self.inputs = {s.name: s for s in manifest.inputs}
        self.outputs = {s.name: s for s in manifest.outputs}
        self.providers = [f"TensorRT {trt.__version__}"]
        if set(self._input_names) != set(self.inputs):
            self.close()
            raise EngineMismatch(
                f"{bundle.ref}: plan {artifact.path} takes {sorted(self._input_names)}, "
                f"the manifest declares {sorted(self.inputs)}"
            )

    @property
    def precision(self) -> str:
        return str((self.artifact.tensorrt or {}).get("precision") or self.artifact.precision)

    def infer(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        from strato._tensors import validate_inputs

        validate_inputs(self.inputs, inputs)
        with self._lock:
            return self._run(inputs)

    def _run(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        import numpy as np

        cudart, context = self._cuda, self._context
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        staged = []  # keep host arrays alive until the stream is synchronized
        for name in self._input_names:
            array = np.ascontiguousarray(inputs[name], dtype=self._dtypes[name])
            if not context.set_input_shape(name, tuple(array.shape)):
                raise InvalidInput(f"{name}: shape {array.shape} is outside the plan's profile")
            ptr = self._buffers[name].reserve(array.nbytes)
            _check(
                cudart.cudaMemcpyAsync(
                    ptr, array.ctypes.data, array.nbytes, to_device, self._stream
                )
            )
            context.set_tensor_address(name, ptr)
            staged.append(array)
        results = {}
        for name in self._output_names:
            shape = tuple(context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self._dtypes[name])
            context.set_tensor_address(name, self._buffers[name].reserve(results[name].nbytes))
        if not context.execute_async_v3(int(self._stream)):
            raise OSError(f"{self.bundle.ref}: TensorRT execute_async_v3 failed")
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, host in results.items():
            ptr = self._buffers[name].ptr
            _check(
                cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, to_host, self._stream)
            )
        _check(cudart.cudaStreamSynchronize(self._stream))
        return results

    def close(self) -> None:
        for buffer in getattr(self, "_buffers", {}).values():
            buffer.free()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            self._cuda.cudaStreamDestroy(stream)
            self._stream = None
        self._context = None
        self._engine = None

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["tensorrt"] = dict(self.artifact.tensorrt or {})
        return described
