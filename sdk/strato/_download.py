"""The one staged download of a published version, shared by `Registry.download`/`open`, the edge's
`strato edge pull` and the Lambda S3 loader.

Order, so that a hostile registry or network can never place a byte outside the staging folder:

1. fetch `manifest.json` (bounded size, duplicate keys refused);
2. check its signature when trusted keys are configured;
3. check its identity: name and version equal the place it was found (no replay, no misplacement);
4. check every artifact path: relative, normalised, no `..`, no absolute path, named once;
5. only then stream each artifact into a fresh staging folder beside the target, through sha256
   and bounded by its declared size, refusing on mismatch;
6. write the manifest bytes exactly as published, then rename the folder into place.

A refused download removes the staging folder and any folder it created: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._bundle import MANIFEST, Bundle, Manifest
from ._errors import BundleError, IntegrityError
from ._files import dir_mode, file_mode
from ._manifest import MAX_MANIFEST_BYTES, write_manifest_bytes
from ._storage import read_bounded

if TYPE_CHECKING:
    from collections.abc import Collection

    from ._manifest import Artifact
    from ._signing import TrustedKeysLike
    from ._storage import Store

__all__ = ["cache_folder", "cached_version", "fetch_manifest", "fetch_version"]

log = logging.getLogger("strato.download")


def fetch_manifest(
    store: Store,
    name: str,
    version: str,
    *,
    trusted_keys: TrustedKeysLike | None = None,
    manifest_bytes: bytes | None = None,
    check_signature: bool = True,
) -> tuple[Manifest, bytes]:
    """Steps 1-4: the verified manifest of `name:version` and its bytes as published
    (`check_signature=False` only to re-sign it)."""
    where = f"{store.url}/{name}/{version}"
    data = manifest_bytes
    if data is None:
        data = read_bounded(store, f"{name}/{version}/{MANIFEST}", MAX_MANIFEST_BYTES)
    manifest = Manifest.from_json_bytes(data, source=f"{where}/{MANIFEST}")
    if check_signature:
        Bundle(Path(where), manifest).check_signature(trusted_keys)
    manifest.check_identity(name, version, where=where)
    manifest.check_paths()
    return manifest, data


def fetch_version(
    store: Store,
    name: str,
    version: str,
    target: Path,
    *,
    trusted_keys: TrustedKeysLike | None = None,
    skip_kinds: Collection[str] = (),
    manifest_bytes: bytes | None = None,
) -> Bundle:
    """Download `name:version` into `target` (which must not exist yet), verified, atomically.

    Artifacts of `skip_kinds` stay in the registry (e.g. TensorRT plans on a GPU-less host);
    the manifest is kept as published, so its signature still verifies on every later load.
    """
    manifest, data = fetch_manifest(
        store, name, version, trusted_keys=trusted_keys, manifest_bytes=manifest_bytes
    )
    created = _make_parents(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        os.chmod(staging, dir_mode())
        for artifact in manifest.artifacts:
            if artifact.kind not in skip_kinds:
                _stream(store, f"{name}/{version}/{artifact.path}", staging, artifact)
        write_manifest_bytes(staging, data)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(staging, ignore_errors=True)  # a concurrent pull won; use its copy
            return Bundle.load(
                target, trusted_keys=trusted_keys, expect=(name, version), skip_kinds=skip_kinds
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return Bundle(target, manifest, skip_kinds=skip_kinds)


def cache_folder(cache_root: Path, registry_url: str, name: str, version: str, data: bytes) -> Path:
    """Where a cached copy lives: keyed by registry URL and the manifest's sha256, so two
    registries (or a re-signed version) never share an entry."""
    registry_key = hashlib.sha256(registry_url.encode()).hexdigest()[:16]
    manifest_key = hashlib.sha256(data).hexdigest()[:16]
    return cache_root / registry_key / name / f"{version}.{manifest_key}"


def cached_version(
    store: Store,
    name: str,
    version: str,
    cache_root: Path,
    *,
    trusted_keys: TrustedKeysLike | None = None,
    skip_kinds: Collection[str] = (),
    keep_served: bool = False,
) -> Bundle:
    """A verified local copy of `name:version`: the cached one when it still verifies against the
    registry's manifest (signature, identity and every sha256 checked again, every time), else a
    fresh download (a changed or planted cache entry is discarded, never served)."""
    data = read_bounded(store, f"{name}/{version}/{MANIFEST}", MAX_MANIFEST_BYTES)
    target = cache_folder(cache_root, store.url, name, version, data)
    if (target / MANIFEST).is_file():
        try:
            bundle = Bundle.load(
                target,
                trusted_keys=trusted_keys,
                expect=(name, version),
                skip_kinds=skip_kinds,
                keep_served=keep_served,
            )
            if bundle.manifest != Manifest.from_json_bytes(data):
                raise IntegrityError(f"cached manifest of {name}:{version} was changed")
            return bundle
        except BundleError as exc:  # changed or planted: never served; fetched again
            log.warning("discarding cached copy %s: %s", target, exc)
            shutil.rmtree(target, ignore_errors=True)
    return fetch_version(
        store,
        name,
        version,
        target,
        trusted_keys=trusted_keys,
        skip_kinds=skip_kinds,
        manifest_bytes=data,
    )


def _make_parents(folder: Path) -> list[Path]:
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        path.mkdir(mode=dir_mode(), exist_ok=True)
    return list(reversed(missing))


def _stream(store: Store, key: str, staging: Path, artifact: Artifact) -> None:
    dest = staging / artifact.path
    dest.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    digest, written = hashlib.sha256(), 0
    with os.fdopen(os.open(dest, flags, file_mode()), "wb") as stream:
        for chunk in store.iter_bytes(key):
            written += len(chunk)
            if written > artifact.size:
                raise IntegrityError(
                    f"{key} is larger than the {artifact.size} bytes its manifest declares"
                )
            digest.update(chunk)
            stream.write(chunk)
    actual = digest.hexdigest()
    if actual != artifact.sha256 or written != artifact.size:
        raise IntegrityError(
            f"{key} has sha256 {actual[:16]}… ({written} bytes) but the manifest says "
            f"{artifact.sha256[:16]}… ({artifact.size} bytes); refused"
        )
