"""ONNX Runtime engine: TensorRT EP > CUDA EP > CPU EP, by what this install offers."""

from __future__ import annotations

import re
import tempfile
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from strato._errors import BundleError, EngineError, InvalidInput
from strato._settings import ort_threads

from .base import Engine

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np

    from strato._bundle import Artifact, Bundle
    from strato._tensors import TensorSpec

__all__ = ["PROVIDER_ORDER", "OnnxRuntimeEngine", "available_providers", "external_data"]

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

# What ONNX Runtime says when the engine, not the request, failed: memory, a provider, CUDA.
_ENGINE_FAULT = re.compile(
    r"failed to allocate|bad_alloc|out of memory|\bcuda|cudnn|cublas|tensorrt|execution provider",
    re.IGNORECASE,
)


def run_error(exc: Exception, ref: str) -> InvalidInput | EngineError:
    """ONNX Runtime's failure in `run` as strato's error: the engine's own fault (allocation,
    provider) is an `EngineError`; anything else is the input (a shape the graph refuses)."""
    kind = type(exc).__name__
    if isinstance(exc, MemoryError) or kind in ("EPFail", "NotImplemented"):
        return EngineError(f"{ref}: ONNX Runtime failed ({kind}): {exc}")
    if kind != "InvalidArgument" and _ENGINE_FAULT.search(str(exc)):
        return EngineError(f"{ref}: ONNX Runtime failed ({kind}): {exc}")
    return InvalidInput(f"{ref}: ONNX Runtime rejected the input: {exc}")


def available_providers() -> list[str]:
    import onnxruntime as ort

    offered = set(ort.get_available_providers())
    return [p for p in PROVIDER_ORDER if p in offered] or ["CPUExecutionProvider"]


def external_data(bundle: Bundle, model: Artifact, graph: bytes) -> dict[str, bytes]:
    """The verified bytes of every artifact `graph` names as external data (weights of models
    over 2 GB live in `<model>.data`), keyed by the location the graph uses (relative to the
    model's folder). ONNX Runtime is given these bytes, never a path it would open itself."""
    folder = PurePosixPath(model.path).parent
    found = {}
    for artifact in bundle.manifest.artifacts:
        path = PurePosixPath(artifact.path)
        if artifact.path == model.path or artifact.kind in bundle.skip_kinds:
            continue
        if folder.parts != path.parts[: len(folder.parts)]:
            continue
        location = path.relative_to(folder).as_posix()
        if location.encode() in graph:  # a location is stored as plain text in the graph
            found[location] = bundle.read_verified(artifact)
    return found


def _session(
    model: bytes,
    providers: Sequence[str],
    threads: int | None,
    *,
    name: str = "model",
    data: Mapping[str, bytes] | None = None,
) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # From bytes, ONNX Runtime resolves external data against the working directory: a graph
    # naming `weights.bin` would load whatever file of that name sits there, unverified. Point
    # it at an empty private folder, so only the verified bytes below can be found.
    empty = tempfile.TemporaryDirectory(prefix="strato-no-external-")
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", empty.name
    )
    if data:
        names = list(data)
        buffers = [data[key] for key in names]
        options.add_external_initializers_from_files_in_memory(
            names, buffers, [len(b) for b in buffers]
        )
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = ort_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        with empty:
            return ort.InferenceSession(model, sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types, not importable lazily
        raise BundleError(f"ONNX Runtime cannot load {name}: {exc}") from exc


class OnnxRuntimeEngine(Engine):
    kind = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        artifact: Artifact,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.bundle = bundle
        self.artifact = artifact
        # the very bytes that were hashed: a file swapped after verification is never loaded,
        # its external data (`model.onnx.data`) neither
        graph = bundle.read_verified(artifact)
        self._session = _session(
            graph,
            providers or available_providers(),
            threads,
            name=f"{bundle.ref} {artifact.path}",
            data=external_data(bundle, artifact, graph),
        )
        self.providers = list(self._session.get_providers())
        manifest = bundle.manifest
        self.inputs = {s.name: s for s in manifest.inputs}
        self.outputs = {s.name: s for s in manifest.outputs}
        graph_inputs = {i.name for i in self._session.get_inputs()}
        if graph_inputs != set(self.inputs):
            raise BundleError(
                f"{bundle.ref}: {artifact.path} takes inputs {sorted(graph_inputs)} but the "
                f"manifest declares {sorted(self.inputs)}"
            )
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._specs: tuple[TensorSpec, ...] = tuple(self.inputs.values())

    def infer(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        # Hot path: the common one-input case validates without building sets.
        if len(inputs) != len(self._specs):
            from strato._tensors import validate_inputs

            validate_inputs(self.inputs, inputs)
        for spec in self._specs:
            try:
                array = inputs[spec.name]
            except KeyError:
                raise InvalidInput(
                    f"missing input {spec.name!r}; the model takes {sorted(self.inputs)} "
                    f"(got {sorted(inputs)})"
                ) from None
            spec.check(array)
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as exc:  # ORT's exception types are not importable lazily
            raise run_error(exc, self.bundle.ref) from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None
