"""The device store: which model versions this daemon serves, loaded and hot-swapped.

Two layouts: a folder registry (`<store>/<name>/<version>/manifest.json` plus
`<name>/aliases.json`), where each model is served at the version named by alias `current`,
else `prod`, else the newest; or ONE bundle with `manifest.json` at the root (a SageMaker model
directory). A watcher re-reads the store; when a served version changes, the new engine is
loaded off the event loop and swapped in atomically while requests in flight finish on the old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato import Bundle, Manifest, ModelNotFound, ModelUnavailable, Registry, StratoError
from strato.engines import load_engine
from strato.serving import model_metadata

from strato_edge.batcher import Batcher

if TYPE_CHECKING:
    from collections.abc import Mapping
    from concurrent.futures import Executor
    from pathlib import Path

    from strato.engines import Engine

    from strato_edge.config import ServeConfig
    from strato_edge.metrics import Metrics

__all__ = ["SERVED_ALIASES", "ModelStore", "ServedModel", "served_versions"]

log = logging.getLogger("strato.edge.store")

SERVED_ALIASES = ("current", "prod")
RETRY_FAILED_S = 30.0
MANIFEST = "manifest.json"


@dataclass
class ServedModel:
    """One loaded (model, version): its engine, its batcher, its OIP metadata."""

    name: str
    version: str
    engine: Engine
    batcher: Batcher
    metadata: dict[str, Any]

    @property
    def precision(self) -> str:
        return self.engine.precision


def served_versions(root: Path, current: Mapping[str, str] | None = None) -> dict[str, str]:
    """name -> the version a daemon serves from `root` (blocking: reads the disk).

    A malformed `aliases.json` keeps the version in `current` (what is served now), else the
    newest; it is logged, never fatal.
    """
    if (root / MANIFEST).is_file():
        manifest = Manifest.read(root / MANIFEST)
        return {manifest.name: manifest.version}
    registry = Registry(root)
    chosen: dict[str, str] = {}
    for name in registry.models():
        versions = registry.versions(name)
        try:
            aliases = registry.aliases(name)
        except StratoError as exc:
            log.warning("%s; keeping what is served", exc)
            kept = (current or {}).get(name)
            aliases = {SERVED_ALIASES[0]: kept} if kept else {}
        pick = next((aliases[a] for a in SERVED_ALIASES if aliases.get(a) in versions), None)
        chosen[name] = pick or versions[-1]
    return chosen


def _again(exc: StratoError) -> StratoError:
    """A fresh copy of a cached load failure (same class, so the same status)."""
    try:
        return type(exc)(str(exc))
    except TypeError:  # a class whose constructor takes more than a message
        return ModelUnavailable(str(exc))


class ModelStore:
    """Loads and serves every model of a store folder; `refresh()` applies changes."""

    def __init__(
        self, root: Path, config: ServeConfig, metrics: Metrics, executor: Executor
    ) -> None:
        self.root = root
        self.config = config
        self.metrics = metrics
        self.executor = executor
        self.ready = False
        self._served: dict[str, str] = {}
        self._loaded: dict[tuple[str, str], ServedModel] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        self._failed: dict[tuple[str, str], float] = {}  # -> when loading it last failed
        self._load_errors: dict[tuple[str, str], StratoError] = {}  # -> why, answered meanwhile
        # Versions loaded on request besides the served ones, least recently used first.
        self._extra: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def single_bundle(self) -> bool:
        return (self.root / MANIFEST).is_file()

    def served(self) -> dict[str, str]:
        return dict(self._served)

    def installed(self, name: str) -> list[str]:
        if self.single_bundle:
            return [self._served[name]] if name in self._served else []
        return Registry(self.root).versions(name)

    # --- loading -------------------------------------------------------------------------
    def _load_blocking(self, name: str, version: str) -> ServedModel:
        path = self.root if self.single_bundle else self.root / name / version
        # signature (when keys are set), identity, then every sha256 before the engine sees a byte
        # the served model's bytes as hashed here go to the engine: read and hashed once
        bundle = Bundle.load(path, expect=(name, version), keep_served=True)
        engine = load_engine(bundle, threads=self.config.threads)
        batcher = Batcher(
            engine,
            self.config.batching_for(name),
            self.executor,
            on_batch=lambda size: self.metrics.batch(name, size),
            on_run=lambda rows, seconds, waits: self.metrics.execution(
                name, version, rows, seconds, waits
            ),
        )
        metadata = model_metadata(engine)
        metadata["parameters"]["version"] = version
        return ServedModel(name, version, engine, batcher, metadata)

    async def _ensure(self, name: str, version: str) -> ServedModel:
        key = (name, version)
        served = self._loaded.get(key)
        if served is not None:
            return served
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            served = self._loaded.get(key)
            if served is None:
                served = await asyncio.to_thread(self._load_blocking, name, version)
                self._loaded[key] = served
        return served

    async def start(self) -> None:
        """Load every model the store names; a model that fails to load is logged, not fatal."""
        wanted = await asyncio.to_thread(served_versions, self.root) if self.root.is_dir() else {}
        for name, version in wanted.items():
            try:
                await self._ensure(name, version)
            except StratoError as exc:
                self._failed[(name, version)] = time.monotonic()
                log.error("cannot serve %s:%s: %s", name, version, exc)
                continue
            self._served[name] = version
        self.ready = True

    # --- lookup --------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None) -> ServedModel:
        if version is None or version == self._served.get(name):
            current = self._served.get(name)
            if current is None:
                raise ModelNotFound(
                    f"model {name!r} is not served here (models: {sorted(self._served) or 'none'})"
                )
            return self._loaded[(name, current)]
        key = (name, version)
        loaded = self._loaded.get(key)
        if loaded is not None:
            if key in self._extra:
                self._extra.move_to_end(key)
            return loaded
        if self._failed_recently(name, version) and key in self._load_errors:
            raise _again(self._load_errors[key])  # not re-hashed on every request
        installed = await asyncio.to_thread(self.installed, name)
        if version not in installed:
            raise ModelNotFound(f"{name} has no installed version {version!r} (has {installed})")
        try:
            served = await self._ensure(name, version)
        except StratoError as exc:
            self._failed[key], self._load_errors[key] = time.monotonic(), exc
            raise
        self._load_errors.pop(key, None)
        if self._served.get(name) != version:
            self._extra[key] = None
            self._extra.move_to_end(key)
            self._evict_extra()
        return served

    def _evict_extra(self) -> None:
        """Keep at most `max_loaded_versions` unserved versions loaded: a client asking for
        every installed version cannot pin them all in memory."""
        while len(self._extra) > self.config.max_loaded_versions:
            (name, version), _ = self._extra.popitem(last=False)
            if self._served.get(name) != version:
                log.info("unloading %s:%s (least recently used)", name, version)
                self._retire(name, version)

    def loaded(self) -> list[str]:
        """`name:version` of every loaded engine (served and on-request ones)."""
        return sorted(f"{name}:{version}" for name, version in self._loaded)

    def queue_depth(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for (name, _), served in self._loaded.items():
            depth[name] = depth.get(name, 0) + served.batcher.depth
        return depth

    # --- hot swap ------------------------------------------------------------------------
    async def refresh(self) -> list[str]:
        """Apply changes of the store; returns `name:version` of each model newly served."""
        try:
            wanted = await asyncio.to_thread(served_versions, self.root, dict(self._served))
        except (StratoError, OSError, ValueError) as exc:
            log.warning("cannot read store %s: %s", self.root, exc)
            return []
        swapped = []
        for name, version in wanted.items():
            if self._served.get(name) == version or self._failed_recently(name, version):
                continue
            try:
                await self._ensure(name, version)
            except StratoError as exc:
                self._failed[(name, version)] = time.monotonic()
                log.error(
                    "keeping %s:%s; cannot load %s: %s", name, self._served.get(name), version, exc
                )
                continue
            previous = self._served.get(name)
            self._extra.pop((name, version), None)  # served now, never evicted
            self._served[name] = version  # the swap: later requests see the new engine
            self.metrics.swap(name)
            swapped.append(f"{name}:{version}")
            log.info("serving %s:%s (was %s)", name, version, previous)
            if previous is not None:
                self._retire(name, previous)
        for name in set(self._served) - set(wanted):
            log.info("model %s left the store; no longer served", name)
            self._retire(name, self._served.pop(name))
        return swapped

    def _failed_recently(self, name: str, version: str) -> bool:
        """A version that failed to load is retried every `RETRY_FAILED_S`, not every check."""
        failed_at = self._failed.get((name, version))
        return failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_S

    def _retire(self, name: str, version: str) -> None:
        served = self._loaded.pop((name, version), None)
        if served is not None:
            task = asyncio.get_running_loop().create_task(served.batcher.retire())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one bad refresh
                log.exception("store refresh failed")

    async def aclose(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for served in self._loaded.values():
            with contextlib.suppress(Exception):
                await served.batcher.aclose()
        self._loaded.clear()
        self._served.clear()
