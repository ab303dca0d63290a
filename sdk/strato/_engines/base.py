"""The engine contract every engine implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from strato._bundle import Artifact, Bundle
    from strato._tensors import TensorSpec

__all__ = ["Engine", "model_metadata"]


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
        """Run the model on named arrays; named outputs. Bad input is an `InvalidInput`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release device memory; the engine is unusable afterwards."""

    @property
    def precision(self) -> str:
        """The precision of the artifact this engine runs (`fp32` when unset)."""
        return self.artifact.precision or "fp32"

    def describe(self) -> dict[str, Any]:
        """What serves the model: engine kind, artifact, precision and the providers really used."""
        return {
            "engine": self.kind,
            "artifact": self.artifact.path,
            "precision": self.precision,
            "providers": list(self.providers),
        }


def model_metadata(engine: Engine) -> dict[str, Any]:
    """OIP model metadata for a loaded engine, with strato's extras under `parameters`."""
    manifest = engine.bundle.manifest
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": f"{engine.kind}_{engine.artifact.kind}",
        "inputs": [s.to_dict() for s in manifest.inputs],
        "outputs": [s.to_dict() for s in manifest.outputs],
        "parameters": {
            "version": manifest.version,
            "task": manifest.task,
            "labels": list(manifest.labels),
            "calibration": manifest.calibration,
            "cloud": manifest.serving.get("cloud", "allowed"),
            "precision": engine.precision,
            "engine": engine.kind,
            "providers": engine.providers,
        },
    }
