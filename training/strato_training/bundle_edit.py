"""Add artifacts to a registry version by publishing the NEXT version (versions are immutable).

The source bundle is copied to a temporary folder, the new files are added and hashed, the
manifest gains the artifacts plus any metrics / calibration / serving entries, and the result
is published as `name:<next>`. The new manifest records where it came from (`parent`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import BundleError
from strato._bundle import MANIFEST, Artifact, Bundle, write_manifest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from strato import ModelRef, Registry

__all__ = ["NewFile", "add_artifacts"]


NewFile = tuple[Path, dict[str, Any]]
"""(source file, artifact spec): spec has `path` (inside the bundle) and optional kind,
precision, format, tensorrt — the fields of `strato.Artifact`."""


def _merge(old: Mapping[str, Any], new: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(old)
    for key, value in (new or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _add_files(root: Path, files: Sequence[NewFile]) -> list[Artifact]:
    artifacts = []
    for source, spec in files:
        relpath = str(spec["path"])
        target = (root / relpath).resolve()
        if root.resolve() not in target.parents:
            raise BundleError(f"artifact path {relpath!r} escapes the bundle")
        if not Path(source).is_file():
            raise BundleError(f"cannot add {relpath}: {source} does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        fields = {k: v for k, v in spec.items() if k != "path"}
        artifacts.append(Artifact.of_file(root, relpath, **fields))
    return artifacts


def add_artifacts(
    registry: Registry,
    ref: str | ModelRef,
    files: Sequence[NewFile] = (),
    *,
    metrics: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    serving: Mapping[str, Any] | None = None,
    note: str | None = None,
    alias: str | None = None,
) -> ModelRef:
    """Publish `ref` + `files` (+ merged metrics/calibration/serving) as the next version.

    >>> add_artifacts(reg, "digits-mlp:1", [(Path("q.onnx"), {"path": "model.int8.onnx",
    ...     "kind": "onnx", "precision": "int8", "format": "qoperator"})])
    ModelRef(name='digits-mlp', version='2', alias=None)
    """
    source = registry.open(ref)
    version = registry.next_version(source.name)
    with tempfile.TemporaryDirectory(prefix=f"strato-{source.name}-") as tmp:
        root = Path(tmp) / version
        shutil.copytree(source.root, root, ignore=shutil.ignore_patterns(MANIFEST, ".manifest.*"))
        manifest = source.manifest.with_artifacts(_add_files(root, files))
        history = [*manifest.extra.get("history", []), {"from": source.ref, "note": note or ""}]
        manifest = replace(
            manifest,
            version=version,
            created=datetime.now(timezone.utc).isoformat(),
            metrics=_merge(manifest.metrics, metrics),
            calibration=_merge(manifest.calibration, calibration),
            serving=_merge(manifest.serving, serving),
            extra={**manifest.extra, "parent": source.ref, "history": history},
        )
        write_manifest(root, manifest)
        return registry.publish(Bundle.load(root), alias=alias)
