"""Model sync: pull verified bundles from a registry (folder or `s3://`) into the device store.

`pull` downloads into a temp folder beside the target, verifies every sha256, renames it into
place, then moves alias `current`; a corrupt or interrupted download never touches the served
version. The store keeps the newest `keep` versions plus any an alias names.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import ConfigError, DowngradeRefused, ModelRef, Registry, StratoError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CURRENT",
    "SERVED",
    "PullResult",
    "check_downgrade",
    "check_not_own_source",
    "open_source",
    "prune",
    "pull",
    "rollback",
    "served_record",
    "store_status",
    "watch",
]

log = logging.getLogger("strato.edge.sync")

CURRENT = "current"
MANIFEST = "manifest.json"
SERVED = "served.json"  # per model: the highest version served, the one an operator accepted
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


def check_not_own_source(source: Registry, store: Path) -> None:
    """A store is never its own source: pruning it would delete published versions."""
    if source.is_local and Path(source.url).expanduser().resolve() == store.expanduser().resolve():
        raise ConfigError(
            f"the device store {store} is the source registry {source.url}: pruning would delete "
            "published versions; give the store its own folder (--store, default .strato/device)"
        )


def served_record(store: Path, name: str) -> dict[str, str | None]:
    """`{"highest": ..., "accepted": ...}`: the highest version this device served, and a lower
    one an operator accepted with `strato edge rollback`."""
    path = store / name / SERVED
    if not os.path.lexists(path):  # a fresh device, or one from before served.json existed
        return {"highest": _highest_installed(store, name), "accepted": None}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:  # torn by a power cut, or edited: never fail open
        floor = _highest_installed(store, name)
        log.warning("%s is unreadable (%s); refusing versions below %s", path, exc, floor)
        return {"highest": floor, "accepted": None}
    record = raw
    return {
        key: value if isinstance(value := record.get(key), str) else None
        for key in ("highest", "accepted")
    }


def _highest_installed(store: Path, name: str) -> str | None:
    numbered = [v for v in Registry(store).versions(name) if _number(v) is not None]
    return max(numbered, key=lambda v: _number(v) or 0) if numbered else None


def _write_record(store: Path, name: str, record: dict[str, str | None]) -> None:
    path = store / name / SERVED
    tmp = path.with_name(f".{SERVED}.{os.getpid()}")
    with tmp.open("w") as stream:  # on disk before the rename: a power cut tears nothing
        stream.write(json.dumps(record))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def _number(version: str | None) -> int | None:
    return int(version) if version and version.isascii() and version.isdigit() else None


def check_downgrade(store: Path, name: str, version: str) -> None:
    """`DowngradeRefused` when `version` is below the highest this device served and no
    operator accepted it (`strato edge rollback NAME --to VERSION`)."""
    record = served_record(store, name)
    highest, wanted = _number(record["highest"]), _number(version)
    if highest is None or wanted is None or wanted >= highest or record["accepted"] == version:
        return
    raise DowngradeRefused(
        f"{name}:{version} is below {name}:{highest}, which this device has served: a registry "
        f"alias moved back (or a replayed version); refused. To go back on purpose: "
        f"strato edge rollback {name} --to {version}"
    )


def _mark_served(store: Path, name: str, version: str, *, accepted: str | None = None) -> None:
    record = served_record(store, name)
    number, highest = _number(version), _number(record["highest"])
    if number is not None and (highest is None or number > highest):
        record["highest"] = version
    if accepted is not None or (number is not None and highest is not None and number >= highest):
        record["accepted"] = accepted
    _write_record(store, name, record)


def pull(
    ref: str,
    *,
    source: Registry,
    store: Path,
    keep: int = 3,
    alias: str = CURRENT,
) -> PullResult:
    """Install `ref` (NAME, NAME:VERSION or NAME@ALIAS) from `source` and serve it.

    Refused before anything is written: a store that is the source, and a version below the
    highest this device has served (`DowngradeRefused`)."""
    if keep < 1:
        raise ConfigError(f"--keep must be >= 1, got {keep}")
    check_not_own_source(source, store)
    resolved = source.resolve(ref)
    name, version = resolved.name, str(resolved.version)
    check_downgrade(store, name, version)
    device = Registry(store)
    previous = device.aliases(name).get(alias) if (store / name).is_dir() else None
    downloaded = False
    if not (store / name / version / MANIFEST).is_file():
        source.download(resolved, store / name / version)  # temp + verify + rename
        downloaded = True
    if previous != version:
        device.promote(name, version, alias)
    _mark_served(store, name, version)
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


def rollback(store: Path, name: str, *, alias: str = CURRENT, to: str | None = None) -> str:
    """Move `alias` back to the version it named before (or to installed version `to`); returns
    that version. The operator's act: later pulls may serve it though it is below the highest
    version served. Refused, with nothing rewritten, when that version is not installed."""
    device = Registry(store)
    if to is None:
        version = device.rollback(name, alias)  # validates NAME; checks installed before writing
    else:
        installed = device.versions(name)
        if to not in installed:
            raise ConfigError(
                f"{name}:{to} is no longer installed in {store} (installed: {installed}); "
                "nothing changed"
            )
        device.promote(name, to, alias)
        version = to
    _mark_served(store, name, version, accepted=version)
    return version


def store_status(store: Path) -> list[dict[str, Any]]:
    """Per model: installed versions, aliases and the version a daemon would serve."""
    from strato_edge.device_store import served_versions

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
    on_error: Callable[[Exception], None] | None = None,
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
        except (StratoError, OSError) as exc:  # refused or unreadable: keep serving, retry later
            log.warning("pull of %s failed: %s", ref, exc)
            if on_error is not None:
                on_error(exc)
        deadline = time.monotonic() + interval_s
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.2, interval_s))
