"""The bundle: a directory with `manifest.json` and the artifacts it names, every one hashed.

A bundle is the unit that moves between training, the registry, the edge and the cloud.
`Bundle.load` checks the signature (when trusted keys are configured), then the sha256 of every
file, before anything reads it; `Bundle.read_verified` hands an engine the very bytes it hashed.
The manifest itself lives in `_manifest.py`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, IntegrityError
from ._files import file_chunks, sha256_file
from ._manifest import (
    BUNDLE_FORMAT,
    MANIFEST,
    Artifact,
    Manifest,
    canonical_json,
    check_artifact_path,
    write_manifest,
)
from ._settings import trusted_keys_spec

if TYPE_CHECKING:
    import os
    from collections.abc import Collection, Iterable, Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ._signing import TrustedKeysLike
    from ._tensors import TensorSpec

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


class Bundle:
    """A verified bundle on local disk.

    >>> bundle = Bundle.load("path/to/digits-mlp/3")
    >>> bundle.manifest.labels, bundle.path_of("model.onnx")
    """

    def __init__(self, root: Path, manifest: Manifest, *, skip_kinds: Collection[str] = ()) -> None:
        self.root = root
        self.manifest = manifest
        self.skip_kinds = frozenset(skip_kinds)
        self._kept: tuple[str, bytes] | None = None  # see `load(keep_served=True)`

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str],
        *,
        verify: bool = True,
        trusted_keys: TrustedKeysLike | None = None,
        expect: tuple[str, str] | None = None,
        skip_kinds: Collection[str] = (),
        keep_served: bool = False,
    ) -> Bundle:
        """Read the manifest, check its Ed25519 signature when trusted keys are configured
        (`trusted_keys` or `STRATO_TRUSTED_KEYS`; `SignatureError`), refuse it unless it names
        `expect` (name, version) when given, then verify every artifact's sha256
        (`IntegrityError`), except those of `skip_kinds` (e.g. TensorRT plans in the cloud).

        `keep_served`: keep the bytes of the model `select()` picks, as hashed here, for the
        engine's `read_verified` (which takes them once): a served model is read and hashed once,
        not twice, and what the engine loads is still exactly what was checked. For loaders that
        build an engine at once (the device store, the Lambda); the bytes are held until then."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle directory {root} does not exist")
        bundle = cls(root, Manifest.read(root / MANIFEST), skip_kinds=skip_kinds)
        if verify:
            bundle.check_signature(trusted_keys)
            if expect is not None:
                bundle.manifest.check_identity(*expect, where=str(root))
            bundle.verify(keep=bundle._served_path() if keep_served else None)
        return bundle

    def check_signature(self, trusted_keys: TrustedKeysLike | None = None) -> str | None:
        """The key id that signed this bundle, or None when no trusted keys are configured."""
        if trusted_keys is None and trusted_keys_spec() is None:
            return None
        from ._signing import verify_manifest  # lazy: cryptography loads only when keys are set

        return verify_manifest(self.manifest, trusted_keys, source=str(self.root / MANIFEST))

    def verify(self, *, keep: str | None = None) -> None:
        """Every artifact (but `skip_kinds`) is a plain file inside the bundle with its sha256;
        the verified bytes of the artifact at `keep` are kept for one `read_verified`."""
        self.manifest.check_paths()
        for artifact in self.manifest.artifacts:
            if artifact.kind in self.skip_kinds:
                continue
            if artifact.path == keep:
                self._kept = (artifact.path, self._read_checked(artifact))
            else:
                self._check(artifact, self._hash(artifact))

    def read_verified(self, artifact: str | Artifact) -> bytes:
        """The artifact's bytes, read once and hashed: load exactly these (no re-open race).
        Bytes kept by `load(keep_served=True)` are handed over (once) without a second read."""
        artifact = artifact if isinstance(artifact, Artifact) else self.manifest.artifact(artifact)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == artifact.path:
            return kept[1]
        return self._read_checked(artifact)

    def drop_kept(self) -> None:
        """Forget bytes `load(keep_served=True)` kept (an engine that did not take them)."""
        self._kept = None

    def _read_checked(self, artifact: Artifact) -> bytes:
        data = b"".join(file_chunks(self._plain_path(artifact)))
        self._check(artifact, hashlib.sha256(data).hexdigest())
        return data

    def _served_path(self) -> str | None:
        try:
            return self.select().path
        except BundleError:
            return None

    def _plain_path(self, artifact: Artifact) -> Path:
        relpath = check_artifact_path(artifact.path)
        root = self.root.resolve()
        path = root / relpath
        if not path.exists() and not path.is_symlink():
            raise IntegrityError(f"{self.ref}: artifact {relpath} is missing")
        if path.resolve() != path:
            raise IntegrityError(f"{self.ref}: artifact {relpath} is reached through a symlink")
        return path

    def _hash(self, artifact: Artifact) -> str:
        return sha256_file(self._plain_path(artifact))

    def _check(self, artifact: Artifact, actual: str) -> None:
        if actual != artifact.sha256:
            raise IntegrityError(
                f"{self.ref}: {artifact.path} has sha256 {actual[:16]}… but the manifest "
                f"says {artifact.sha256[:16]}…; the file is corrupt or was changed"
            )

    def sign(self, private_key: Ed25519PrivateKey | str | os.PathLike[str]) -> Manifest:
        """Sign this bundle in place (hashes verified first); only `manifest.json` changes."""
        from ._signing import sign_manifest

        self.verify()  # never sign hashes that do not match the files
        self.manifest = sign_manifest(self.manifest, private_key)
        write_manifest(self.root, self.manifest)
        return self.manifest

    @property
    def name(self) -> str:
        """The model name the manifest gives."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The version the manifest gives."""
        return self.manifest.version

    @property
    def ref(self) -> str:
        """`NAME:VERSION`."""
        return f"{self.manifest.name}:{self.manifest.version}"

    @property
    def labels(self) -> tuple[str, ...]:
        """Class labels, in output order (empty for models that are not classifiers)."""
        return self.manifest.labels

    @property
    def signature(self) -> dict[str, Any] | None:
        """The manifest's Ed25519 signature block, or None when unsigned."""
        return self.manifest.signature

    def path_of(self, artifact: str | Artifact) -> Path:
        """Where `artifact` (an `Artifact` or its relative path) lies inside this bundle."""
        relpath = artifact.path if isinstance(artifact, Artifact) else artifact
        return self.root / relpath

    def models(self, kind: str = "onnx") -> list[Artifact]:
        """The artifacts of one kind (`onnx`, `tensorrt`, ...), in manifest order."""
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
