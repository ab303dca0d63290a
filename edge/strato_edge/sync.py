"""Model sync: pull verified bundles from a registry (folder or `s3://`) into the device store.

`pull` downloads into a temp folder beside the target, verifies every sha256, renames it into
place, then moves alias `current`; a corrupt or interrupted download never touches the served
version. The store keeps the newest `keep` versions plus any an alias names.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import ConfigError, ModelRef, Registry, StratoError
from strato._bundle import MANIFEST

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CURRENT",
    "PullResult",
    "open_source",
    "prune",
    "pull",
    "rollback",
    "store_status",
    "watch",
]

log = logging.getLogger("strato.edge.sync")

CURRENT = "current"
_STAGING_MAX_AGE_S = 3600.0


@dataclass(frozen=True, slots=True)
class PullResult:
    name: str
    version: str
    downloaded: bool
    previous: str | None
    removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.previous != self.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "downloaded": self.downloaded,
            "previous": self.previous,
            "removed": list(self.removed),
        }


def open_source(root: str, *, s3_endpoint: str | None = None) -> Registry:
    """A registry to pull from; `s3://` talks to `s3_endpoint` (default: `STRATO_S3_ENDPOINT`)."""
    if not root.startswith("s3://") and not Path(root).is_dir():
        raise ConfigError(f"registry folder {root} does not exist")
    return Registry(root, s3_endpoint=s3_endpoint)


def pull(
    ref: str,
    *,
    source: Registry,
    store: Path,
    keep: int = 3,
    alias: str = CURRENT,
) -> PullResult:
    """Install `ref` (NAME, NAME:VERSION or NAME@ALIAS) from `source` and serve it."""
    if keep < 1:
        raise ConfigError(f"--keep must be >= 1, got {keep}")
    resolved = source.resolve(ref)
    name, version = resolved.name, str(resolved.version)
    device = Registry(store)
    previous = device.aliases(name).get(alias) if (store / name).is_dir() else None
    downloaded = False
    if not (store / name / version / MANIFEST).is_file():
        source.download(resolved, store / name / version)  # temp + verify + rename
        downloaded = True
    if previous != version:
        device.promote(name, version, alias)
    removed = prune(store, name, keep=keep)
    return PullResult(name, version, downloaded, previous, tuple(removed))


def prune(store: Path, name: str, *, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions; never one an alias names. Clears stale temps."""
    device = Registry(store)
    pinned = set(device.aliases(name).values())
    versions = device.versions(name)
    doomed = [v for v in versions[:-keep] if v not in pinned] if keep else []
    for version in doomed:
        shutil.rmtree(store / name / version, ignore_errors=True)
    now = time.time()
    for stale in (store / name).glob(".*.pull-*"):
        if stale.is_dir() and now - stale.stat().st_mtime > _STAGING_MAX_AGE_S:
            shutil.rmtree(stale, ignore_errors=True)
    return doomed


def rollback(store: Path, name: str, *, alias: str = CURRENT) -> str:
    """Move `alias` back to the version it named before; returns that version."""
    device = Registry(store)
    version = device.rollback(name, alias)
    if version not in device.versions(name):
        raise ConfigError(
            f"{name}:{version} is no longer installed in {store} (pruned); pull it again"
        )
    return version


def store_status(store: Path) -> list[dict[str, Any]]:
    """Per model: installed versions, aliases and the version a daemon would serve."""
    from strato_edge.store import served_versions

    if not store.is_dir():
        return []
    served = served_versions(store)
    if (store / MANIFEST).is_file():
        return [
            {"model": n, "versions": [v], "aliases": {}, "serving": v} for n, v in served.items()
        ]
    device = Registry(store)
    return [
        {
            "model": name,
            "versions": device.versions(name),
            "aliases": device.aliases(name),
            "serving": served.get(name),
        }
        for name in device.models()
    ]


def watch(
    ref: str,
    *,
    source: Registry,
    store: Path,
    interval_s: float,
    keep: int = 3,
    on_pull: Callable[[PullResult], None] | None = None,
    on_error: Callable[[StratoError], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Poll `ref` every `interval_s` and pull when it names another version."""
    ModelRef.parse(ref)
    last: str | None = None
    while not should_stop():
        try:
            target = str(source.resolve(ref).version)
            if target != last:
                result = pull(ref, source=source, store=store, keep=keep)
                last = target
                if on_pull is not None:
                    on_pull(result)
        except StratoError as exc:  # a bad upload is refused; keep serving, try again later
            log.warning("pull of %s failed: %s", ref, exc)
            if on_error is not None:
                on_error(exc)
        deadline = time.monotonic() + interval_s
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.2, interval_s))
