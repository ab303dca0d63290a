"""Find the model a `MODEL_URI` names, fetch it into `/tmp` verified, and start its engine.

`MODEL_URI` forms:

- ``s3://bucket/prefix/NAME/VERSION`` or ``s3://bucket/prefix/NAME@ALIAS`` (also ``NAME:VERSION``)
- a bundle folder (one with ``manifest.json``), e.g. one packaged at ``$LAMBDA_TASK_ROOT/model``
- a folder registry reference ``DIR/NAME@ALIAS``, ``DIR/NAME:VERSION`` or ``DIR/NAME`` (newest)

S3 models are fetched with `GetObject` alone (the function's role may read the model prefix and
nothing else, so no `ListBucket`) by `Registry.open`, i.e. strato's one staged download: the
alias document names the version; the manifest's signature (when `STRATO_TRUSTED_KEYS` is set),
identity and artifact paths are checked before one byte is written; every sha256 is checked in a
staging folder before one rename publishes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import Bundle, ConfigError, ModelRef, Registry

if TYPE_CHECKING:
    from strato.engines import Engine

    from strato_lambda.settings import Settings

__all__ = [
    "CLOUD_SKIPS",
    "LoadedModel",
    "ModelSource",
    "fetch_s3_bundle",
    "load_model",
    "parse_model_uri",
]

MANIFEST = "manifest.json"
CLOUD_SKIPS = ("tensorrt",)  # plans only run on the GPU that built them


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


def fetch_s3_bundle(
    url: str,
    ref: ModelRef | str,
    cache_dir: Path,
    *,
    s3_client: Any = None,
    s3_endpoint: str | None = None,
) -> Bundle:
    """`ref` from the S3 registry at `url`, through strato's one staged download (GetObject
    only for NAME@ALIAS and NAME:VERSION). The cache is keyed by registry URL and manifest
    sha256, and a cached copy is verified again (signature, identity, every sha256) on each load.
    TensorRT plans stay in S3: Lambda has no GPU."""
    registry = Registry(url, s3_client=s3_client, s3_endpoint=s3_endpoint, cache_dir=cache_dir)
    return registry.open(ref, skip_kinds=CLOUD_SKIPS)


def _bundle_for(source: ModelSource, settings: Settings, s3_client: Any) -> Bundle:
    if source.kind == "bundle":
        return Bundle.load(source.root, keep_served=True)  # hashed once, handed to the engine
    assert source.ref is not None
    if source.kind == "registry":
        return Registry(source.root).open(source.ref)
    return fetch_s3_bundle(
        source.root,
        source.ref,
        Path(settings.cache_dir),
        s3_client=s3_client,
        s3_endpoint=settings.s3_endpoint,
    )


def load_model(settings: Settings, *, s3_client: Any = None) -> LoadedModel:
    """Fetch and verify the configured model, then start ONNX Runtime with one thread per vCPU."""
    from strato.engines import load_engine
    from strato.serving import model_metadata

    started = time.perf_counter()
    source = parse_model_uri(settings.model_uri or "")
    bundle = _bundle_for(source, settings, s3_client)
    engine = load_engine(
        bundle, precision=settings.precision, prefer_tensorrt=False, threads=settings.threads
    )
    return LoadedModel(engine, model_metadata(engine), source, time.perf_counter() - started)
