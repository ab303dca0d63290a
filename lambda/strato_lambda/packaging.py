"""Deployment helpers: SageMaker's `model.tar.gz` and the SAM parameter overrides for a model."""

from __future__ import annotations

import gzip
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
    # Reproducible members: fixed mode, mtime, owner; nothing of the packing machine.
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def sagemaker_archive(
    bundle: Bundle, output: Path, *, progress: Callable[[str], None] | None = None
) -> str:
    """Write `model.tar.gz` (the bundle at the archive root, as /opt/ml/model); returns sha256.

    Only what the server loads goes in: the ONNX artifact it serves (`Bundle.select`) and the
    manifest naming just that. TensorRT plans (SageMaker Serverless has no GPU), other
    precisions, checkpoints and reports stay out. The same bundle always gives the same bytes:
    members sorted by name, fixed mtimes and owners, a gzip header without time or file name.
    """
    manifest = bundle.manifest
    kept = (bundle.select(),)
    if kept != tuple(manifest.artifacts):
        manifest = replace(manifest, artifacts=kept, signature=None)
    members = {a.path: a for a in kept}
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with (
        partial.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in sorted([*members, MANIFEST]):
            if progress and name in members:
                progress(name)
            data = manifest.to_json_bytes() if name == MANIFEST else None
            _add(archive, name, data if data is not None else bundle.read_verified(members[name]))
    partial.replace(output)  # a reader never sees half an archive
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
