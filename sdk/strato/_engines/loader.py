"""The choice of engine for a bundle on this device: a matching TensorRT plan, else ONNX Runtime."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from strato._errors import BundleError, EngineMismatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from strato._bundle import Bundle

    from .base import Engine

__all__ = ["load_engine"]

log = logging.getLogger("strato.engine")


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
    try:
        return _load(bundle, precision, prefer_tensorrt, providers, threads)
    finally:
        bundle.drop_kept()  # bytes `Bundle.load(keep_served=True)` kept and no engine took


def _load(
    bundle: Bundle,
    precision: str | None,
    prefer_tensorrt: bool,
    providers: Sequence[str] | None,
    threads: int | None,
) -> Engine:
    if prefer_tensorrt and bundle.models("tensorrt"):
        try:
            from .tensorrt_runtime import load_matching_plan

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
