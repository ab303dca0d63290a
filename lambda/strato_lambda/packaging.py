"""Deployment helpers: SageMaker's `model.tar.gz` and the SAM parameter overrides for a model."""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from strato import Bundle, ModelRef, Registry

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DeployParams", "open_bundle", "sagemaker_archive", "sam_parameters"]

MANIFEST = "manifest.json"


def open_bundle(source: str, registry: str | None = None) -> Bundle:
    """A verified bundle from a folder path, else from a registry reference."""
    if (Path(source) / MANIFEST).is_file():
        return Bundle.load(source)
    return Registry(registry).open(source)


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # reproducible archives
    archive.addfile(info, io.BytesIO(data))


def sagemaker_archive(
    bundle: Bundle, output: Path, *, progress: Callable[[str], None] | None = None
) -> str:
    """Write `model.tar.gz` (the bundle at the archive root, as /opt/ml/model); returns sha256.

    TensorRT plans are left out: SageMaker Serverless has no GPU.
    """
    manifest = bundle.manifest
    kept = tuple(a for a in manifest.artifacts if a.kind != "tensorrt")
    if len(kept) != len(manifest.artifacts):
        manifest = replace(manifest, artifacts=kept, signature=None)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(output, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for artifact in sorted(kept, key=lambda a: a.path):
            if progress:
                progress(artifact.path)
            _add(archive, artifact.path, bundle.read_verified(artifact))
        _add(archive, MANIFEST, manifest.to_json_bytes())
    return hashlib.sha256(output.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class DeployParams:
    overrides: dict[str, str]
    model_key: str
    uploads: list[str]

    @property
    def command(self) -> str:
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in self.overrides.items())
        return f"sam deploy --parameter-overrides {pairs}"


def sam_parameters(
    ref: str,
    *,
    registry: str | None = None,
    prefix: str = "registry",
    stage: str | None = None,
    memory: int | None = None,
    architecture: str | None = None,
    sagemaker_image: str | None = None,
) -> DeployParams:
    """`sam deploy` overrides serving `ref` from the stack's model bucket under `prefix`.

    ``NAME@ALIAS`` stays an alias (the function follows it at each cold start); ``NAME`` and
    ``NAME:VERSION`` are pinned to the version they resolve to now.
    """
    reg = Registry(registry)
    parsed = ModelRef.parse(ref)
    resolved = reg.resolve(parsed)
    prefix = prefix.strip("/")
    base = f"{prefix}/{resolved.name}" if prefix else resolved.name
    model_key = f"{base}@{parsed.alias}" if parsed.alias else f"{base}/{resolved.version}"
    overrides = {"ModelUri": model_key}
    for key, value in (("Stage", stage), ("MemorySize", memory), ("Architecture", architecture)):
        if value is not None:
            overrides[key] = str(value)
    uploads = [
        f"aws s3 sync {reg.url}/{resolved.name}/{resolved.version} "
        f"s3://$MODEL_BUCKET/{base}/{resolved.version}"
    ]
    if parsed.alias:
        uploads.append(
            f"aws s3 cp {reg.url}/{resolved.name}/aliases.json s3://$MODEL_BUCKET/{base}/aliases.json"
        )
    if sagemaker_image:
        archive_key = f"sagemaker/{resolved.name}-{resolved.version}/model.tar.gz"
        overrides |= {
            "EnableSageMaker": "true",
            "SageMakerImageUri": sagemaker_image,
            "SageMakerModelDataKey": archive_key,
        }
        uploads.append(
            f"strato cloud package {resolved} --registry {reg.url} --output model.tar.gz && "
            f"aws s3 cp model.tar.gz s3://$MODEL_BUCKET/{archive_key}"
        )
    return DeployParams(overrides, model_key, uploads)
