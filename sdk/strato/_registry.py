"""The model registry: `<root>/<name>/<version>/…` and `<root>/<name>/aliases.json`.

References: ``name`` (the newest version), ``name:version``, ``name@alias``.
Versions are immutable; aliases move (`promote`, `rollback`) and keep their history. Concurrent
publishers each get their own version (or `VersionExists`), concurrent alias moves never lose
one another (see `_storage`). Every name, version and alias passes `_names.check_name`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._bundle import MANIFEST, Bundle, Manifest
from ._download import cached_version, fetch_manifest, fetch_version
from ._errors import BundleError, ConfigError, ModelNotFound, VersionExists
from ._names import check_name, is_name, numeric_version
from ._settings import DEFAULT_REGISTRY, registry_root
from ._storage import LocalStore, read_bounded
from ._storage_s3 import S3Store

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ._signing import TrustedKeysLike

__all__ = ["ALIASES", "DEFAULT_REGISTRY", "ModelRef", "Registry", "default_registry_root"]

ALIASES = "aliases.json"
_PUBLISH_ATTEMPTS = 64


def default_registry_root(explicit: str | os.PathLike[str] | None = None) -> str:
    """Explicit argument > `STRATO_REGISTRY` > `.strato/registry` (read in `strato._settings`)."""
    return registry_root(explicit)



def open_store(
    root: str | os.PathLike[str], *, s3_client: Any = None, s3_endpoint: str | None = None
) -> LocalStore | S3Store:
    """The store a registry root names: `s3://bucket/prefix`, else a local folder."""
    text = os.fspath(root)
    if text.startswith("s3://"):
        return S3Store(text, client=s3_client, endpoint=s3_endpoint)
    return LocalStore(text)

@dataclass(frozen=True, slots=True)
class ModelRef:
    """A reference to a model: `name`, `name:version` or `name@alias`."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse a reference; `ModelNotFound` says which part is not a valid name."""
        name, alias, version = text, None, None
        if "@" in text:
            name, _, alias = text.partition("@")
        elif ":" in text:
            name, _, version = text.partition(":")
        for part, what in ((name, "name"), (alias, "alias"), (version, "version")):
            if part is not None and not is_name(part):
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
    number = numeric_version(version)
    return (0, number) if number is not None else (1, version)


def parse_aliases(data: bytes | None, where: str) -> dict[str, Any]:
    """An `aliases.json` document, checked: `BundleError` names what is malformed."""
    if data is None:
        return {"aliases": {}, "history": {}}
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{where} is malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{where} is not a JSON object")
    aliases, history = doc.setdefault("aliases", {}), doc.setdefault("history", {})
    if not isinstance(aliases, dict) or not isinstance(history, dict):
        raise BundleError(f"{where}: 'aliases' and 'history' must be objects")
    for alias, version in aliases.items():
        if not is_name(alias) or not is_name(version):
            raise BundleError(f"{where}: alias {alias!r} → {version!r} is not a valid name")
    for alias, versions in history.items():
        if not isinstance(versions, list) or not all(is_name(v) for v in versions):
            raise BundleError(f"{where}: history of {alias!r} must be a list of versions")
    return doc


class Registry:
    """A registry rooted at a local folder (default) or `s3://bucket/prefix`."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        s3_client: Any = None,
        s3_endpoint: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        trusted_keys: TrustedKeysLike | None = None,
    ) -> None:
        self.store: LocalStore | S3Store = open_store(
            default_registry_root(root), s3_client=s3_client, s3_endpoint=s3_endpoint
        )
        self._cache_dir = Path(cache_dir) if cache_dir else None
        # None: `STRATO_TRUSTED_KEYS` decides at load time (see `Bundle.load`).
        self.trusted_keys = trusted_keys

    @property
    def url(self) -> str:
        """The registry's root: a folder path or `s3://bucket/prefix`."""
        return self.store.url

    @property
    def is_local(self) -> bool:
        """Whether the registry is a local folder (not S3)."""
        return isinstance(self.store, LocalStore)

    # --- reading -------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the models with at least one version (odd folder names are ignored)."""
        return [n for n in self.store.children("") if is_name(n) and self.versions(n)]

    def versions(self, name: str) -> list[str]:
        """Published versions of `name`, oldest first; folders that are no valid name are not."""
        check_name(name)
        found = [
            v
            for v in self.store.children(name)
            if is_name(v) and self.store.exists(f"{name}/{v}/{MANIFEST}")
        ]
        return sorted(found, key=_version_key)

    def aliases(self, name: str) -> dict[str, str]:
        """alias → version; `BundleError` when `aliases.json` is malformed."""
        return dict(self._alias_doc(name)["aliases"])

    def _alias_doc(self, name: str) -> dict[str, Any]:
        key = f"{check_name(name)}/{ALIASES}"
        data = read_bounded(self.store, key) if self.store.exists(key) else None
        return parse_aliases(data, f"{self.url}/{key}")

    def resolve(self, ref: str | ModelRef) -> ModelRef:
        """Turn any reference into `name:version`; `ModelNotFound` names what is missing."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise ModelNotFound(f"model {ref.name!r} not in registry {self.url} (models: {known})")
        if ref.alias:
            return ModelRef(ref.name, self._alias_target(ref.name, ref.alias))
        if ref.version:
            if ref.version not in versions:
                raise ModelNotFound(f"{ref.name} has no version {ref.version!r} (has {versions})")
            return ref
        return ModelRef(ref.name, versions[-1])

    def locate(self, ref: str | ModelRef) -> ModelRef:
        """Like `resolve`, with reads alone (no listing) for `name:version` and `name@alias`."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        if ref.alias:
            if not self.store.exists(f"{ref.name}/{ALIASES}"):
                raise ModelNotFound(f"model {ref.name!r} has no aliases in {self.url}")
            return ModelRef(ref.name, self._alias_target(ref.name, ref.alias))
        return ref if ref.version else self.resolve(ref)

    def _alias_target(self, name: str, alias: str) -> str:
        aliases = self.aliases(name)
        if alias not in aliases:
            raise ModelNotFound(
                f"{name} has no alias {alias!r} (aliases: {sorted(aliases) or 'none'})"
            )
        return aliases[alias]

    def manifest(self, ref: str | ModelRef) -> Manifest:
        """The manifest of `ref`, its signature (when keys are set) and identity checked."""
        resolved = self.resolve(ref)
        manifest, _ = fetch_manifest(
            self.store, resolved.name, str(resolved.version), trusted_keys=self.trusted_keys
        )
        return manifest

    def open(
        self,
        ref: str | ModelRef,
        *,
        verify: bool = True,
        skip_kinds: Collection[str] = (),
        keep_served: bool = False,
    ) -> Bundle:
        """A verified local `Bundle`: in place for a folder registry, from a cache for S3 (keyed
        by registry URL and manifest sha256; checked again on every open). `keep_served` as in
        `Bundle.load`: the served model's bytes, as hashed, go to the engine without a re-read."""
        if isinstance(self.store, LocalStore):
            resolved = self.resolve(ref)
            return Bundle.load(
                self.store.root / resolved.name / str(resolved.version),
                verify=verify,
                trusted_keys=self.trusted_keys,
                expect=(resolved.name, str(resolved.version)),
                skip_kinds=skip_kinds,
                keep_served=keep_served,
            )
        located = self.locate(ref)
        cache = self._cache_dir or Path(tempfile.gettempdir()) / "strato-cache"
        return cached_version(
            self.store,
            located.name,
            str(located.version),
            cache,
            trusted_keys=self.trusted_keys,
            skip_kinds=skip_kinds,
            keep_served=keep_served,
        )

    def download(
        self, ref: str | ModelRef, target: Path, *, skip_kinds: Collection[str] = ()
    ) -> Bundle:
        """Download into `target` through `_download.fetch_version`: manifest, signature,
        identity and paths checked before one artifact byte is written, and only into staging."""
        resolved = self.resolve(ref)
        return fetch_version(
            self.store,
            resolved.name,
            str(resolved.version),
            target,
            trusted_keys=self.trusted_keys,
            skip_kinds=skip_kinds,
        )

    # --- writing -------------------------------------------------------------------------
    def next_version(self, name: str) -> str:
        """One above the highest numeric version, claimed-but-unfinished ones included."""
        numbers = [numeric_version(v) for v in self.store.children(check_name(name))]
        return str(max((n for n in numbers if n is not None), default=0) + 1)

    def publish(
        self, bundle: Bundle, *, alias: str | None = None, renumber: bool = False
    ) -> ModelRef:
        """Copy a verified bundle in as `name:version` (immutable); optionally point `alias` at
        it. A taken version is `VersionExists`, or with `renumber` (unsigned bundles only) the
        next free number; the returned ref says which version was published."""
        bundle.verify()
        manifest = bundle.manifest
        staged = self.store.stage(
            bundle.root, check_name(manifest.name), [a.path for a in manifest.artifacts]
        )
        try:
            for _ in range(_PUBLISH_ATTEMPTS):
                try:
                    prefix = f"{manifest.name}/{manifest.version}"
                    self.store.commit(staged, prefix, manifest.to_json_bytes())
                    break
                except VersionExists:
                    if not renumber or manifest.signature is not None:
                        raise
                    manifest = replace(manifest, version=self.next_version(manifest.name))
            else:
                raise VersionExists(
                    f"{manifest.name}: no free version in {_PUBLISH_ATTEMPTS} tries"
                )
        finally:
            self.store.discard(staged)
        ref = ModelRef(manifest.name, manifest.version)
        if alias:
            self.promote(manifest.name, manifest.version, alias)
        return ref

    def _update_aliases(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        key = f"{check_name(name)}/{ALIASES}"

        def apply(data: bytes | None) -> bytes:
            doc = parse_aliases(data, f"{self.url}/{key}")
            change(doc)
            return json.dumps(doc, indent=2).encode()

        self.store.update(key, apply)

    def promote(self, name: str, version: str, alias: str = "prod") -> None:
        """Point `alias` at `version` (appended to the alias's history)."""
        check_name(alias, "alias")
        if version not in self.versions(name):
            raise ModelNotFound(f"{name} has no version {version!r} (has {self.versions(name)})")

        def move(doc: dict[str, Any]) -> None:
            history = doc["history"].setdefault(alias, [])
            if doc["aliases"].get(alias) != version:
                history.append(version)
            doc["aliases"][alias] = version

        self._update_aliases(name, move)

    def rollback(self, name: str, alias: str = "prod") -> str:
        """Point `alias` back at the version it named before; returns that version. Refused,
        with nothing written, when there is none or it is no longer in the registry."""
        check_name(alias, "alias")
        installed = self.versions(name)
        chosen: list[str] = []

        def back(doc: dict[str, Any]) -> None:
            history = doc["history"].get(alias, [])
            if len(history) < 2:
                raise ConfigError(f"{name}@{alias} has no earlier version to roll back to")
            if history[-2] not in installed:
                raise ConfigError(
                    f"{name}:{history[-2]} is no longer installed in {self.url} (pruned); nothing changed"
                )
            history.pop()
            doc["aliases"][alias] = history[-1]
            chosen.append(history[-1])

        self._update_aliases(name, back)
        return chosen[0]

    def remove(self, name: str, version: str, *, force: bool = False) -> list[str]:
        """Delete `name:version`; returns the aliases that named it (dropped with it). An
        aliased version is refused (`ConfigError`) unless `force`. The number is never reused."""
        if version not in self.versions(name):
            raise ModelNotFound(f"{name} has no version {version!r} (has {self.versions(name)})")
        named = sorted(a for a, v in self.aliases(name).items() if v == version)
        if named and not force:
            raise ConfigError(
                f"{name}:{version} is what {', '.join(f'@{a}' for a in named)} names; move the "
                "alias first, or force the removal (the alias goes with it)"
            )
        if named:

            def drop(doc: dict[str, Any]) -> None:
                for alias in named:
                    doc["aliases"].pop(alias, None)

            self._update_aliases(name, drop)
        self.store.remove_version(f"{name}/{version}")
        return named

    def prune(self, name: str, *, keep: int, force: bool = False) -> list[str]:
        """Remove all but the newest `keep` versions of `name`; aliased versions stay unless
        `force`. Returns the versions removed."""
        if keep < 0:
            raise ConfigError(f"keep must be >= 0, got {keep}")
        aliased = set(self.aliases(name).values())
        versions = self.versions(name)
        old = versions[: max(len(versions) - keep, 0)]
        removed = []
        for version in old:
            if version in aliased and not force:
                continue
            self.remove(name, version, force=force)
            removed.append(version)
        return removed

    def sign(
        self, ref: str | ModelRef, private_key: Ed25519PrivateKey | str | os.PathLike[str]
    ) -> Manifest:
        """Sign a published version in place: only the manifest's `signature` changes, in one
        atomic write (temp + rename locally, one PUT on S3). Local artifacts are re-hashed first."""
        from ._signing import sign_manifest

        resolved = self.resolve(ref)
        name, version = resolved.name, str(resolved.version)
        manifest, _ = fetch_manifest(self.store, name, version, check_signature=False)
        if isinstance(self.store, LocalStore):
            Bundle(self.store.root / name / version, manifest).verify()
        signed = sign_manifest(manifest, private_key)
        self.store.replace_bytes(f"{name}/{version}/{MANIFEST}", signed.to_json_bytes())
        return signed
