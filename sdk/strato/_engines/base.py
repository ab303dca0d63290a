"""The engine contract and the choice of engine for a bundle on this device."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from strato._errors import BundleError, EngineMismatch

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np

    from strato._bundle import Artifact, Bundle
    from strato._tensors import TensorSpec

__all__ = ["Engine", "load_engine"]

log = logging.getLogger("strato.engine")


class Engine:
    """load(bundle, artifact) → infer(dict[str, ndarray]) → dict[str, ndarray], with metadata.

    `kind` is ``onnxruntime`` or ``tensorrt``; `providers` is what really runs the model
    (ONNX Runtime falls back to CPU silently, so it is read back from the session).
    """

    kind: str = "engine"
    bundle: Bundle
    artifact: Artifact
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    providers: list[str]

    def infer(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release device memory; the engine is unusable afterwards."""

    @property
    def precision(self) -> str:
        return self.artifact.precision or "fp32"

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.kind,
            "artifact": self.artifact.path,
            "precision": self.precision,
            "providers": list(self.providers),
        }


def load_engine(
    bundle: Bundle,
    *,
    precision: str | None = None,
    prefer_tensorrt: bool = True,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> Engine:
    """The best engine this device can run for `bundle`.

    A TensorRT plan whose key matches this device (TensorRT version, compute capability,
    precision, source ONNX) wins; a plan that does not match is never loaded. Otherwise ONNX
    Runtime serves the ONNX artifact with the best available provider.
    """
    if prefer_tensorrt and bundle.models("tensorrt"):
        try:
            from .tensorrt import load_matching_plan

            engine: Engine | None = load_matching_plan(bundle, precision=precision)
            if engine is not None:
                return engine
        except (EngineMismatch, ImportError, OSError) as exc:
            log.info("TensorRT plan not used for %s: %s", bundle.ref, exc)
    from .onnxruntime import OnnxRuntimeEngine

    try:
        artifact = bundle.select(precision=precision)
    except BundleError:
        if precision is None:
            raise
        # Asked for a precision only a plan has (fp16/int8 engines): serve the default ONNX.
        artifact = bundle.select()
    return OnnxRuntimeEngine(bundle, artifact, providers=providers, threads=threads)
