"""Find the model a `MODEL_URI` names, fetch it into `/tmp` verified, and start its engine.

`MODEL_URI` forms:

- ``s3://bucket/prefix/NAME/VERSION`` or ``s3://bucket/prefix/NAME@ALIAS`` (also ``NAME:VERSION``)
- a bundle folder (one with ``manifest.json``), e.g. one packaged at ``$LAMBDA_TASK_ROOT/model``
- a folder registry reference ``DIR/NAME@ALIAS``, ``DIR/NAME:VERSION`` or ``DIR/NAME`` (newest)

S3 models are fetched with `GetObject` alone (the function's role may read the model prefix and
nothing else, so no `ListBucket`): the alias document names the version, the manifest names the
artifacts, every sha256 is checked in a staging folder before one rename publishes it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import ConfigError, ModelNotFound
from strato._bundle import MANIFEST, Bundle, Manifest, write_manifest
from strato._registry import ALIASES, ModelRef, Registry
from strato._storage import S3Store

if TYPE_CHECKING:
    from strato.engines import Engine

    from strato_lambda.settings import Settings

__all__ = ["LoadedModel", "ModelSource", "fetch_s3_bundle", "load_model", "parse_model_uri"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model lives: ``kind`` is ``bundle`` (a folder), ``registry`` or ``s3``."""

    kind: str
    root: str
    ref: ModelRef | None = None

    def __str__(self) -> str:
        return self.root if self.ref is None else f"{self.root}/{self.ref}"


@dataclass(slots=True)
class LoadedModel:
    engine: Engine
    metadata: dict[str, Any]
    source: ModelSource
    load_seconds: float

    @property
    def name(self) -> str:
        return self.engine.bundle.name

    @property
    def version(self) -> str:
        return self.engine.bundle.version


def _split_ref(uri: str) -> tuple[str, ModelRef]:
    """`root/NAME@ALIAS`, `root/NAME:VERSION` or `root/NAME/VERSION` → (root, ref)."""
    head, _, last = uri.rstrip("/").rpartition("/")
    if "@" in last or ":" in last:
        return head, ModelRef.parse(last)
    root, _, name = head.rpartition("/")
    if not root or not name:
        raise ConfigError(
            f"MODEL_URI {uri!r} names no model: expected .../NAME/VERSION, .../NAME@ALIAS "
            "or .../NAME:VERSION"
        )
    return root, ModelRef.parse(f"{name}:{last}")


def parse_model_uri(uri: str) -> ModelSource:
    """What `uri` names; `ConfigError` when it is none of the supported forms."""
    uri = uri.strip()
    if not uri:
        raise ConfigError("no model configured: set STRATO_MODEL_URI (or MODEL_URI)")
    if uri.startswith("s3://"):
        if uri[5:].count("/") < 1:
            raise ConfigError(f"MODEL_URI {uri!r} names a bucket but no model")
        root, ref = _split_ref(uri)
        if not root.startswith("s3://") or len(root) <= 5:
            raise ConfigError(
                f"MODEL_URI {uri!r} names no bucket and model: expected s3://BUCKET/.../NAME/VERSION"
            )
        return ModelSource("s3", root, ref)
    path = Path(uri).expanduser()
    if (path / MANIFEST).is_file():
        return ModelSource("bundle", str(path))
    head, _, last = str(path).rpartition("/")
    if "@" in last or ":" in last:
        root, ref = _split_ref(str(path))
        return ModelSource("registry", root, ref)
    if head and Path(head).is_dir() and path.is_dir():
        return ModelSource("registry", head, ModelRef.parse(last))
    raise ConfigError(
        f"MODEL_URI {uri!r} is neither a bundle folder (no {MANIFEST}) nor a registry "
        "reference DIR/NAME@ALIAS or DIR/NAME:VERSION"
    )


def _alias_version(store: S3Store, ref: ModelRef) -> str:
    try:
        doc = json.loads(store.read_bytes(f"{ref.name}/{ALIASES}"))
    except ModelNotFound:
        raise ModelNotFound(f"model {ref.name!r} has no aliases in {store.url}") from None
    version = (doc.get("aliases") or {}).get(ref.alias)
    if not isinstance(version, str):
        raise ModelNotFound(f"{ref.name} has no alias {ref.alias!r} in {store.url}")
    return version


def fetch_s3_bundle(store: S3Store, ref: ModelRef, cache_dir: Path) -> Bundle:
    """Download `ref` (GetObject only) into `cache_dir/NAME/VERSION`, verified, atomically."""
    if ref.alias:
        version = _alias_version(store, ref)
    elif ref.version:
        version = ref.version
    else:  # a bare name needs the newest version, which only a listing can tell
        version = str(Registry(store.url, s3_client=store.client).resolve(ref).version)
    target = cache_dir / ref.name / version
    if (target / MANIFEST).is_file():
        # verified (signature included) before it was renamed in; its manifest may be stripped
        cached = Bundle.load(target, verify=False)
        cached.verify()
        return cached
    key = f"{ref.name}/{version}"
    manifest = Manifest.from_dict(json.loads(store.read_bytes(f"{key}/{MANIFEST}")))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.pull-", dir=target.parent))
    try:
        # the signature (when STRATO_TRUSTED_KEYS is set) covers the manifest as published
        Bundle(staging, manifest).check_signature()
        for artifact in manifest.artifacts:
            if artifact.kind == "tensorrt":
                continue  # plans only run on the GPU that built them; Lambda has none
            dest = staging / artifact.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.download(f"{key}/{artifact.path}", dest)
        kept = [a for a in manifest.artifacts if a.kind != "tensorrt"]
        if len(kept) != len(manifest.artifacts):  # the signature covered the plans too
            manifest = replace(manifest, artifacts=tuple(kept), signature=None)
        write_manifest(staging, manifest)
        Bundle(staging, manifest).verify()  # every sha256 before the rename
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(target, verify=False)


def _bundle_for(source: ModelSource, settings: Settings, s3_client: Any) -> Bundle:
    if source.kind == "bundle":
        return Bundle.load(source.root)
    assert source.ref is not None
    if source.kind == "registry":
        return Registry(source.root).open(source.ref)
    if s3_client is None:
        import boto3  # lazy: only S3 models need it, and the Lambda runtime provides it

        s3_client = boto3.client("s3", endpoint_url=settings.s3_endpoint)
    return fetch_s3_bundle(
        S3Store(source.root, client=s3_client), source.ref, Path(settings.cache_dir)
    )


def load_model(settings: Settings, *, s3_client: Any = None) -> LoadedModel:
    """Fetch and verify the configured model, then start ONNX Runtime with one thread per vCPU."""
    from strato._transports.local import model_metadata
    from strato.engines import load_engine

    started = time.perf_counter()
    source = parse_model_uri(settings.model_uri or "")
    bundle = _bundle_for(source, settings, s3_client)
    engine = load_engine(
        bundle, precision=settings.precision, prefer_tensorrt=False, threads=settings.threads
    )
    return LoadedModel(engine, model_metadata(engine), source, time.perf_counter() - started)
