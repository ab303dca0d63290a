"""The model registry: `<root>/<name>/<version>/…` and `<root>/<name>/aliases.json`.

References: ``name`` (the newest version), ``name:version``, ``name@alias``.
Versions are immutable; aliases move (`promote`, `rollback`) and keep their history.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._bundle import MANIFEST, Bundle, Manifest, write_manifest
from ._errors import BundleError, ConfigError, ModelNotFound
from ._storage import LocalStore, S3Store, open_store

if TYPE_CHECKING:
    from ._signing import TrustedKeysLike

__all__ = ["DEFAULT_REGISTRY", "ModelRef", "Registry", "default_registry_root"]

DEFAULT_REGISTRY = ".strato/registry"
ALIASES = "aliases.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_registry_root(explicit: str | os.PathLike[str] | None = None) -> str:
    """Explicit argument > `STRATO_REGISTRY` > `.strato/registry`."""
    if explicit:
        return os.fspath(explicit)
    return os.environ.get("STRATO_REGISTRY") or DEFAULT_REGISTRY


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, alias, version = text, None, None
        if "@" in text:
            name, _, alias = text.partition("@")
        elif ":" in text:
            name, _, version = text.partition(":")
        for part, what in ((name, "name"), (alias, "alias"), (version, "version")):
            if part is not None and not _NAME.match(part):
                raise ModelNotFound(
                    f"invalid model reference {text!r}: bad {what} {part!r} "
                    "(expected NAME, NAME:VERSION or NAME@ALIAS)"
                )
        return cls(name, version, alias)

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}:{self.version}" if self.version else self.name


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class Registry:
    """A registry rooted at a local folder (default) or `s3://bucket/prefix`."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        s3_client: Any = None,
        cache_dir: str | os.PathLike[str] | None = None,
        trusted_keys: TrustedKeysLike | None = None,
    ) -> None:
        self.store: LocalStore | S3Store = open_store(
            default_registry_root(root), s3_client=s3_client
        )
        self._cache_dir = Path(cache_dir) if cache_dir else None
        # None: `STRATO_TRUSTED_KEYS` decides at load time (see `Bundle.load`).
        self.trusted_keys = trusted_keys

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def is_local(self) -> bool:
        return isinstance(self.store, LocalStore)

    # --- reading -------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [n for n in self.store.children("") if self.versions(n)]

    def versions(self, name: str) -> list[str]:
        found = [
            v for v in self.store.children(name) if self.store.exists(f"{name}/{v}/{MANIFEST}")
        ]
        return sorted(found, key=_version_key)

    def aliases(self, name: str) -> dict[str, str]:
        return dict(self._alias_doc(name)["aliases"])

    def _alias_doc(self, name: str) -> dict[str, Any]:
        if not self.store.exists(f"{name}/{ALIASES}"):
            return {"aliases": {}, "history": {}}
        doc = json.loads(self.store.read_bytes(f"{name}/{ALIASES}"))
        doc.setdefault("aliases", {})
        doc.setdefault("history", {})
        return dict(doc)

    def resolve(self, ref: str | ModelRef) -> ModelRef:
        """Turn any reference into `name:version`; `ModelNotFound` names what is missing."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise ModelNotFound(f"model {ref.name!r} not in registry {self.url} (models: {known})")
        if ref.alias:
            aliases = self.aliases(ref.name)
            if ref.alias not in aliases:
                raise ModelNotFound(
                    f"{ref.name} has no alias {ref.alias!r} (aliases: {sorted(aliases) or 'none'})"
                )
            return ModelRef(ref.name, aliases[ref.alias])
        if ref.version:
            if ref.version not in versions:
                raise ModelNotFound(f"{ref.name} has no version {ref.version!r} (has {versions})")
            return ref
        return ModelRef(ref.name, versions[-1])

    def manifest(self, ref: str | ModelRef) -> Manifest:
        resolved = self.resolve(ref)
        raw = json.loads(self.store.read_bytes(f"{resolved.name}/{resolved.version}/{MANIFEST}"))
        return Manifest.from_dict(raw)

    def open(self, ref: str | ModelRef, *, verify: bool = True) -> Bundle:
        """A verified local `Bundle`: in place for a folder registry, downloaded for S3."""
        resolved = self.resolve(ref)
        key = f"{resolved.name}/{resolved.version}"
        if isinstance(self.store, LocalStore):
            return Bundle.load(self.store.root / key, verify=verify, trusted_keys=self.trusted_keys)
        cache = self._cache_dir or Path(tempfile.gettempdir()) / "strato-cache"
        target = cache / resolved.name / str(resolved.version)
        if (target / MANIFEST).exists():
            return Bundle.load(target, verify=verify, trusted_keys=self.trusted_keys)
        return self.download(resolved, target)

    def download(self, ref: str | ModelRef, target: Path) -> Bundle:
        """Download, verify, then rename into `target`: nothing half-written ever appears there."""
        resolved = self.resolve(ref)
        key = f"{resolved.name}/{resolved.version}"
        manifest = Manifest.from_dict(json.loads(self.store.read_bytes(f"{key}/{MANIFEST}")))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
        try:
            for artifact in manifest.artifacts:
                dest = staging / artifact.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(f"{key}/{artifact.path}", dest)
            write_manifest(staging, manifest)
            # verifies the signature (when keys are configured) and every sha256 before the rename
            bundle = Bundle.load(staging, trusted_keys=self.trusted_keys)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Bundle(target, bundle.manifest)

    # --- writing -------------------------------------------------------------------------
    def next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)

    def publish(self, bundle: Bundle, *, alias: str | None = None) -> ModelRef:
        """Copy a verified bundle in as `name:version` (immutable); optionally point `alias` at it."""
        bundle.verify()
        name, version = bundle.name, bundle.version
        if version in self.versions(name):
            raise BundleError(
                f"{name}:{version} already exists in {self.url}; versions are immutable"
            )
        self.store.upload_tree(bundle.root, f"{name}/{version}", last=MANIFEST)
        ref = ModelRef(name, version)
        if alias:
            self.promote(name, version, alias)
        return ref

    def promote(self, name: str, version: str, alias: str = "prod") -> None:
        if version not in self.versions(name):
            raise ModelNotFound(f"{name} has no version {version!r} (has {self.versions(name)})")
        ModelRef.parse(f"{name}@{alias}")
        doc = self._alias_doc(name)
        history = doc["history"].setdefault(alias, [])
        if doc["aliases"].get(alias) != version:
            history.append(version)
        doc["aliases"][alias] = version
        self.store.write_bytes(f"{name}/{ALIASES}", json.dumps(doc, indent=2).encode())

    def rollback(self, name: str, alias: str = "prod") -> str:
        """Point `alias` back at the version it named before; returns that version."""
        doc = self._alias_doc(name)
        history = doc["history"].get(alias, [])
        if len(history) < 2:
            raise ConfigError(f"{name}@{alias} has no earlier version to roll back to")
        history.pop()
        doc["aliases"][alias] = history[-1]
        self.store.write_bytes(f"{name}/{ALIASES}", json.dumps(doc, indent=2).encode())
        return str(history[-1])
