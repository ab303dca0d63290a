"""The bundle: a directory with `manifest.json` and the artifacts it names, every one hashed.

A bundle is the unit that moves between training, the registry, the edge and the cloud.
`Bundle.load` verifies the sha256 of every file before anything reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, IntegrityError
from ._tensors import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._signing import TrustedKeysLike

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "Artifact",
    "Bundle",
    "Manifest",
    "canonical_json",
    "make_bundle",
    "sha256_file",
    "write_manifest",
]

BUNDLE_FORMAT = "strato.bundle/1"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Artifact:
    """One file of a bundle.

    kind: ``onnx`` (a model ONNX Runtime or TensorRT can load), ``tensorrt`` (a serialized plan),
    or ``file`` (checkpoint, report, chart). ``precision`` is fp32 / fp16 / int8. ``format`` is
    the quantization format for int8 ONNX (``qdq`` for TensorRT, ``qoperator`` for ORT CPU).
    ``tensorrt`` holds an engine's key: onnx_sha256, version, compute_capability, precision.
    """

    path: str
    sha256: str
    size: int
    kind: str = "file"
    precision: str | None = None
    format: str | None = None
    tensorrt: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "kind": self.kind,
        }
        for key in ("precision", "format", "tensorrt"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Artifact:
        return cls(
            path=str(raw["path"]),
            sha256=str(raw["sha256"]),
            size=int(raw.get("size", 0)),
            kind=str(raw.get("kind", "file")),
            precision=raw.get("precision"),
            format=raw.get("format"),
            tensorrt=raw.get("tensorrt"),
        )

    @classmethod
    def of_file(cls, root: Path, relpath: str, **fields: Any) -> Artifact:
        path = root / relpath
        return cls(relpath, sha256_file(path), path.stat().st_size, **fields)


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds. Unknown keys are kept in `extra` so newer writers round-trip."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifacts: tuple[Artifact, ...]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    framework: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    task: str = "classification"
    labels: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise BundleError(f"invalid model name {self.name!r}")
        if not self.version or "/" in self.version or self.version.startswith("."):
            raise BundleError(f"invalid model version {self.version!r}")

    def artifact(self, path: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.path == path:
                return artifact
        raise BundleError(f"{self.name}:{self.version} has no artifact {path!r}")

    def with_artifacts(self, artifacts: Iterable[Artifact]) -> Manifest:
        by_path = {a.path: a for a in self.artifacts}
        by_path.update({a.path: a for a in artifacts})
        return replace(self, artifacts=tuple(by_path.values()), signature=None)

    def to_dict(self, *, signed: bool = True) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "framework": self.framework,
            "opset": self.opset,
            "task": self.task,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "labels": list(self.labels),
            "preprocessing": self.preprocessing,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "metrics": self.metrics,
            "calibration": self.calibration,
            "serving": self.serving,
            **self.extra,
        }
        if signed and self.signature is not None:
            raw["signature"] = self.signature
        return raw

    def signed_bytes(self) -> bytes:
        """The canonical bytes an Ed25519 signature covers (the manifest without its signature)."""
        return canonical_json(self.to_dict(signed=False))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        fmt = raw.get("format")
        if fmt != BUNDLE_FORMAT:
            raise BundleError(
                f"unsupported bundle format {fmt!r}; this strato reads {BUNDLE_FORMAT}"
            )
        known = set(cls.__dataclass_fields__) | {"format"}
        try:
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                created=str(raw.get("created", "")),
                framework=dict(raw.get("framework", {})),
                opset=raw.get("opset"),
                task=str(raw.get("task", "classification")),
                inputs=tuple(TensorSpec.from_dict(s) for s in raw["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in raw["outputs"]),
                labels=tuple(str(label) for label in raw.get("labels", ())),
                preprocessing=dict(raw.get("preprocessing", {})),
                artifacts=tuple(Artifact.from_dict(a) for a in raw["artifacts"]),
                metrics=dict(raw.get("metrics", {})),
                calibration=dict(raw.get("calibration", {})),
                serving=dict(raw.get("serving", {})),
                signature=raw.get("signature"),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed manifest: {exc!r}") from exc

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        try:
            raw = json.loads(Path(path).read_bytes())
        except FileNotFoundError:
            raise BundleError(f"no {MANIFEST} at {path}") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{path} is not a JSON object")
        return cls.from_dict(raw)


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (temp file + rename) into `directory`."""
    directory = Path(directory)
    body = json.dumps(manifest.to_dict(), indent=2, sort_keys=False).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(body)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / MANIFEST


class Bundle:
    """A verified bundle on local disk.

    >>> bundle = Bundle.load("path/to/digits-mlp/3")
    >>> bundle.manifest.labels, bundle.path_of("model.onnx")
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str],
        *,
        verify: bool = True,
        trusted_keys: TrustedKeysLike | None = None,
    ) -> Bundle:
        """Read the manifest, check its Ed25519 signature when trusted keys are configured
        (`trusted_keys` or `STRATO_TRUSTED_KEYS`; `SignatureError`), then verify every
        artifact's sha256 (`IntegrityError` on mismatch)."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle directory {root} does not exist")
        bundle = cls(root, Manifest.read(root / MANIFEST))
        if verify:
            bundle.check_signature(trusted_keys)
            bundle.verify()
        return bundle

    def check_signature(self, trusted_keys: TrustedKeysLike | None = None) -> str | None:
        """The key id that signed this bundle, or None when no trusted keys are configured."""
        if trusted_keys is None and not os.environ.get("STRATO_TRUSTED_KEYS", "").strip():
            return None
        from ._signing import verify_bundle  # lazy: cryptography loads only when keys are set

        return verify_bundle(self, trusted_keys)

    def verify(self) -> None:
        root = self.root.resolve()
        for artifact in self.manifest.artifacts:
            path = (root / artifact.path).resolve()
            if root not in path.parents:
                raise IntegrityError(f"artifact path {artifact.path!r} escapes the bundle")
            if not path.is_file():
                raise IntegrityError(f"{self.ref}: artifact {artifact.path} is missing")
            actual = sha256_file(path)
            if actual != artifact.sha256:
                raise IntegrityError(
                    f"{self.ref}: {artifact.path} has sha256 {actual[:16]}… but the manifest "
                    f"says {artifact.sha256[:16]}…; the file is corrupt or was changed"
                )

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def signature(self) -> dict[str, Any] | None:
        return self.manifest.signature

    def path_of(self, artifact: str | Artifact) -> Path:
        relpath = artifact.path if isinstance(artifact, Artifact) else artifact
        return self.root / relpath

    def models(self, kind: str = "onnx") -> list[Artifact]:
        return [a for a in self.manifest.artifacts if a.kind == kind]

    def select(self, *, precision: str | None = None, kind: str = "onnx") -> Artifact:
        """The artifact to serve: `precision` if asked, else the manifest's `serving.default`,
        else the fp32 model. Never an artifact the pipeline measured slower than fp32 unless asked.
        """
        candidates = self.models(kind)
        if not candidates:
            raise BundleError(f"{self.ref} has no {kind} artifact")
        if precision is not None:
            for artifact in candidates:
                if artifact.precision == precision:
                    return artifact
            have = sorted({str(a.precision) for a in candidates})
            raise BundleError(f"{self.ref} has no {precision} {kind} artifact (has {have})")
        default = self.manifest.serving.get("default")
        for artifact in candidates:
            if artifact.path == default:
                return artifact
        for artifact in candidates:
            if artifact.precision in (None, "fp32"):
                return artifact
        return candidates[0]

    def __repr__(self) -> str:
        return f"Bundle({self.ref!r}, root={str(self.root)!r})"


def make_bundle(
    root: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec],
    artifacts: Iterable[Mapping[str, Any]],
    **fields: Any,
) -> Bundle:
    """Hash the files already in `root` and write the manifest that names them.

    `artifacts` are dicts with `path` (relative to `root`) and optional `kind`, `precision`,
    `format`, `tensorrt`; `fields` are any other `Manifest` fields (labels, metrics, ...).
    """
    root = Path(root)
    hashed = tuple(
        Artifact.of_file(root, str(spec["path"]), **{k: v for k, v in spec.items() if k != "path"})
        for spec in artifacts
    )
    manifest = Manifest(
        name=name,
        version=version,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        artifacts=hashed,
        **fields,
    )
    write_manifest(root, manifest)
    return Bundle(root, manifest)
