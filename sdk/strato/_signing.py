"""Ed25519 signatures over bundle manifests.

The manifest already holds every artifact's sha256, so one signature over its canonical bytes
(`Manifest.signed_bytes()`: RFC 8785 canonical JSON without the `signature` field) covers the
whole bundle. The signature lives in the manifest itself::

    "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}

`key_id` is the first 16 hex digits of the sha256 of the raw 32-byte public key. Keys are PEM
files: PKCS#8 private keys (mode 0600) and SubjectPublicKeyInfo public keys.

Trusted keys come from an explicit argument or `STRATO_TRUSTED_KEYS` (comma-separated PEM
public key files and/or directories of them). When any are configured, `Bundle.load` and
`Registry.download` refuse an unsigned or wrongly signed bundle with `SignatureError`.

This module works on `Manifest` values only; `Bundle.sign` and `Registry.sign` apply it to a
folder or a published version. It imports neither, so the three modules form no cycle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import ConfigError, SignatureError
from ._manifest import INFO_FIELDS, Manifest
from ._settings import TRUSTED_KEYS_ENV, trusted_keys_spec

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ALGORITHM",
    "TRUSTED_KEYS_ENV",
    "KeyPair",
    "TrustedKeys",
    "TrustedKeysLike",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "resolve_trusted_keys",
    "sign_manifest",
    "verify_manifest",
]

ALGORITHM = "ed25519"
_KEY_SUFFIXES = (".pub", ".pem")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(out_dir: str | os.PathLike[str], *, name: str = "strato") -> KeyPair:
    """Write `<name>.key` (PKCS#8 PEM, mode 0600) and `<name>.pub` into `out_dir`.

    Refuses to overwrite an existing key: losing a signing key is not something to do by accident.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start, so the key is never readable by others, even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(private_pem)
    public_key = private_key.public_key()
    public_path.write_bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private_path, public_path, key_id(public_key))


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; `ConfigError` says what is wrong with it."""
    pem = _read_key_file(Path(path))
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; `ConfigError` says what is wrong with it."""
    pem = _read_key_file(Path(path))
    if b"PRIVATE KEY" in pem:
        raise ConfigError(f"{path} is a private key; trust its public key (.pub) instead")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from None


class TrustedKeys:
    """The public keys a bundle may be signed with, by key id, each with the file it came from."""

    def __init__(self, keys: Iterable[tuple[Ed25519PublicKey, str]]) -> None:
        self._keys: dict[str, tuple[Ed25519PublicKey, str]] = {}
        for public_key, source in keys:
            self._keys[key_id(public_key)] = (public_key, source)
        if not self._keys:
            raise ConfigError("no trusted keys: refusing to verify against an empty key set")

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike[str]]) -> TrustedKeys:
        """PEM public key files, or directories whose `*.pub` / `*.pem` files are keys."""
        found: list[tuple[Ed25519PublicKey, str]] = []
        for entry in paths:
            path = Path(entry).expanduser()
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in _KEY_SUFFIXES)
                if not files:
                    raise ConfigError(f"trusted key directory {path} has no *.pub or *.pem files")
            else:
                files = [path]
            found.extend((load_public_key(file), str(file)) for file in files)
        return cls(found)

    @classmethod
    def parse(cls, spec: str) -> TrustedKeys:
        """From the `STRATO_TRUSTED_KEYS` syntax: comma-separated files and directories."""
        paths = [part.strip() for part in spec.split(",") if part.strip()]
        if not paths:
            raise ConfigError(f"{TRUSTED_KEYS_ENV} names no key files: {spec!r}")
        return cls.from_paths(paths)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, kid: str) -> tuple[Ed25519PublicKey, str] | None:
        return self._keys.get(kid)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({self.ids})"


TrustedKeysLike: TypeAlias = (
    "TrustedKeys | str | os.PathLike[str] | Iterable[str | os.PathLike[str]]"
)


def resolve_trusted_keys(explicit: TrustedKeysLike | None = None) -> TrustedKeys | None:
    """Explicit argument > `STRATO_TRUSTED_KEYS` > none (no signature enforcement)."""
    if explicit is None:
        spec = trusted_keys_spec()
        return TrustedKeys.parse(spec) if spec else None
    if isinstance(explicit, TrustedKeys):
        return explicit
    if isinstance(explicit, str):
        return TrustedKeys.parse(explicit)
    if isinstance(explicit, os.PathLike):
        return TrustedKeys.from_paths([explicit])
    return TrustedKeys.from_paths(explicit)


def sign_manifest(
    manifest: Manifest, private_key: Ed25519PrivateKey | str | os.PathLike[str]
) -> Manifest:
    """The same manifest with a fresh `signature` over its canonical bytes (any old one replaced).

    Refuses a manifest with unknown top-level fields: a reader could not honour them.
    """
    unknown = sorted(set(manifest.extra) - INFO_FIELDS)
    if unknown:
        raise SignatureError(f"{manifest.ref}: refusing to sign unknown field(s) {unknown}")
    key = _private_key(private_key)
    value = key.sign(manifest.signed_bytes())
    signature = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(value).decode("ascii"),
    }
    signed = replace(manifest, signature=signature)
    Manifest.from_json_bytes(signed.to_json_bytes())  # what we sign must read back as signed
    return signed


def verify_manifest(
    manifest: Manifest, trusted: TrustedKeysLike | None = None, *, source: str = "manifest.json"
) -> str | None:
    """Check `manifest`'s signature against `trusted` (or `STRATO_TRUSTED_KEYS`); returns the
    key id that signed it, or None when no keys are configured (nothing is enforced then).

    `source` names the manifest file in error messages.
    """
    keys = resolve_trusted_keys(trusted)
    if keys is None:
        return None
    ref = f"{manifest.name}:{manifest.version}"
    signature = manifest.signature
    if signature is None:
        raise SignatureError(
            f"{ref}: {source} is not signed, but trusted keys are configured "
            f"(trusted key ids: {', '.join(keys.ids)}); sign it with `strato models sign`"
        )
    kid, value = _signature_fields(signature, ref, source)
    entry = keys.get(kid)
    if entry is None:
        raise SignatureError(
            f"{ref}: {source} is signed with key {kid}, which is not trusted "
            f"(trusted key ids: {', '.join(keys.ids)})"
        )
    public_key, key_source = entry
    try:
        public_key.verify(value, manifest.signed_bytes())
    except InvalidSignature:
        raise SignatureError(
            f"{ref}: {source} signature does not verify with key {kid} ({key_source}); "
            "the manifest was changed after signing or the signature is corrupt"
        ) from None
    return kid


def _signature_fields(signature: Any, ref: str, source: str) -> tuple[str, bytes]:
    if not isinstance(signature, dict):
        raise SignatureError(f"{ref}: {source} has a malformed signature (not an object)")
    algorithm = signature.get("algorithm")
    if algorithm != ALGORITHM:
        raise SignatureError(
            f"{ref}: {source} is signed with algorithm {algorithm!r}; strato accepts {ALGORITHM}"
        )
    kid, value = signature.get("key_id"), signature.get("value")
    if not isinstance(kid, str) or not isinstance(value, str):
        raise SignatureError(f"{ref}: {source} signature needs string 'key_id' and 'value'")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{ref}: {source} signature value is not base64") from None
    return kid, raw


def _private_key(key: Ed25519PrivateKey | str | os.PathLike[str]) -> Ed25519PrivateKey:
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
