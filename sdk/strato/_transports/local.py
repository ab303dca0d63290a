"""`Local`: the engine runs in this process, straight from a registry or a bundle folder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato._bundle import Bundle
from strato._engines import Engine, load_engine
from strato._engines.base import model_metadata
from strato._errors import ModelNotFound
from strato._inference import InferRequest, InferResponse
from strato._registry import ModelRef, Registry

from .base import NO_LIMIT, Transport

if TYPE_CHECKING:
    import os

__all__ = ["Local", "model_metadata"]


class Local(Transport):
    """Serve from this process. `source` is a registry root (folder or `s3://`) or a bundle dir.

    >>> client = Client(edge=Local(".strato/registry"))
    """

    name = "local"
    tier = "edge"
    payload_limit = NO_LIMIT  # in process: nothing to split
    in_process = True

    def __init__(
        self,
        source: str | os.PathLike[str] | Registry | Bundle | None = None,
        *,
        precision: str | None = None,
        threads: int | None = None,
    ) -> None:
        self._bundle: Bundle | None = None
        self._registry: Registry | None = None
        if isinstance(source, Bundle):
            self._bundle = source
        elif isinstance(source, Registry):
            self._registry = source
        elif source is not None and (Path(source) / "manifest.json").is_file():
            self._bundle = Bundle.load(source)
        else:
            self._registry = Registry(source)
        self._precision = precision
        self._threads = threads
        self._engines: dict[tuple[str, str | None], Engine] = {}
        # (model, version) -> (engine, name, version, precision): what infer needs, looked up once
        self._served: dict[tuple[str, str | None], tuple[Engine, str, str, str]] = {}
        self._lock = threading.Lock()

    def engine(self, model: str, version: str | None = None) -> Engine:
        """The engine serving `model` (loaded once, then cached)."""
        key = (model, version)
        engine = self._engines.get(key)
        if engine is None:
            with self._lock:
                engine = self._engines.get(key) or self._load(model, version)
                self._engines[key] = engine
        return engine

    def _load(self, model: str, version: str | None) -> Engine:
        if self._bundle is not None:
            bundle = self._bundle
            if model != bundle.name or version not in (None, bundle.version):
                wanted = f"{model}:{version}" if version else model
                raise ModelNotFound(f"{wanted} not served here; this transport serves {bundle.ref}")
        else:
            assert self._registry is not None
            ref = ModelRef.parse(model)
            if version is not None:
                ref = ModelRef(ref.name, version)
            bundle = self._registry.open(ref, keep_served=True)  # hashed once, for the engine
        return load_engine(bundle, precision=self._precision, threads=self._threads)

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """Run the engine in this thread (`timeout` does not apply in process)."""
        served = self._served.get((request.model, request.version))
        if served is None:
            engine = self.engine(request.model, request.version)
            bundle = engine.bundle
            served = (engine, bundle.name, bundle.version, engine.artifact.precision or "fp32")
            self._served[(request.model, request.version)] = served
        engine, name, version, precision = served
        outputs = engine.infer(request.inputs)
        if request.outputs:
            outputs = {k: outputs[k] for k in request.outputs if k in outputs}
        return InferResponse(outputs, name, version, request.id, self.name, precision)

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """OIP metadata of the engine serving `model` (loading it if needed)."""
        return model_metadata(self.engine(model, version))

    def ready(self, model: str) -> bool:
        """Can `model` be served from here?"""
        try:
            self.engine(model)
        except ModelNotFound:
            return False
        return True

    def close(self) -> None:
        """Close every loaded engine."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._served.clear()
