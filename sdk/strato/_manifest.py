"""`manifest.json`: what a bundle holds, its one serialization and the bytes a signature covers.

A manifest is read strictly: duplicate JSON keys are refused, and a *signed* manifest must be
exactly what this reader understands (no unknown fields, every field in the form the signer
wrote), so the signature covers the bytes as found, not a lenient re-parse of them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, IntegrityError, SignatureError
from ._files import file_mode, open_plain, sha256_file
from ._names import check_name
from ._tensors import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BUNDLE_FORMAT",
    "INFO_FIELDS",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "Artifact",
    "Manifest",
    "canonical_json",
    "check_artifact_path",
    "write_manifest",
]

BUNDLE_FORMAT = "strato.bundle/1"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_PATH_PART = 255  # bytes in one file name on Linux (ext4, XFS, ...): longer is ENAMETOOLONG
# Descriptive top-level fields the pipeline writes (kept in `Manifest.extra`); any other unknown
# field is refused in a signed manifest, since this reader could not honour what it means.
INFO_FIELDS = frozenset({"training", "parent", "history"})


def _number(value: float) -> str:
    """ECMAScript's shortest round-trip form of a float (RFC 8785, section 3.2.2.3)."""
    if not math.isfinite(value):
        raise BundleError(f"manifest holds a non-finite number {value!r}")
    if value == 0:
        return "0"
    mantissa, _, exp_text = repr(abs(value)).partition("e")  # repr: the shortest digits
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    exponent = (int(exp_text) if exp_text else 0) - len(fraction)
    stripped = all_digits.rstrip("0")
    exponent += len(all_digits) - len(stripped)
    digits = stripped.lstrip("0")
    k = len(digits)
    n = k + exponent  # value = 0.digits x 10^n
    sign = "-" if value < 0 else ""
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    body = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{body}e{'+' if n - 1 > 0 else '-'}{abs(n - 1)}"


def _encode(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool):
        out.append(json.dumps(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        # RFC 8785 sorts keys by their UTF-16 code units
        keys = sorted(value, key=lambda k: str(k).encode("utf-16-be"))
        for index, key in enumerate(keys):
            if not isinstance(key, str):
                raise BundleError(f"manifest key {key!r} is not a string")
            out.append(("," if index else "") + json.dumps(key, ensure_ascii=False) + ":")
            _encode(value[key], out)
        out.append("}")
    else:
        raise BundleError(f"manifest holds a {type(value).__name__}, which JSON cannot")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes: sorted keys, no whitespace, ES6 numbers."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def check_artifact_path(path: object) -> str:
    """`path` if it is a safe artifact path, else `IntegrityError`.

    Safe: a non-empty relative POSIX path, already normalised (no `.`, `..`, empty parts,
    backslashes, NUL or other control characters), every part a legal file name (at most 255
    bytes), not the manifest itself nor under a folder of its name.
    """
    text = path if isinstance(path, str) else ""
    parts = text.split("/")
    bad = (
        not text
        or len(text) > 1024
        or text.startswith("/")
        or "\\" in text
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)  # NUL, newline, ...
        or any(part in ("", ".", "..") for part in parts)
        or any(len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART for part in parts)
        or PurePosixPath(text).as_posix() != text
        or parts[0].casefold() == MANIFEST  # also `manifest.json/x`: a folder where it goes
    )
    if bad:
        raise IntegrityError(
            f"artifact path {path!r} escapes the bundle or is not a plain relative path; refused"
        )
    return text


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
        """The artifact as the manifest's JSON holds it."""
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
        """An artifact from its manifest entry."""
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
        """The artifact for the file `root/relpath`, hashed now."""
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
        check_name(self.name, "name", error=BundleError)
        check_name(self.version, "version", error=BundleError)
        # labels are text in the file; keep them text here so a signed manifest round-trips
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))

    @property
    def ref(self) -> str:
        """`name:version`."""
        return f"{self.name}:{self.version}"

    def artifact(self, path: str) -> Artifact:
        """The artifact at `path`; `BundleError` when the manifest names none."""
        for artifact in self.artifacts:
            if artifact.path == path:
                return artifact
        raise BundleError(f"{self.name}:{self.version} has no artifact {path!r}")

    def with_artifacts(self, artifacts: Iterable[Artifact]) -> Manifest:
        """The manifest with `artifacts` added or replaced (by path), unsigned."""
        by_path = {a.path: a for a in self.artifacts}
        by_path.update({a.path: a for a in artifacts})
        return replace(self, artifacts=tuple(by_path.values()), signature=None)

    def check_identity(self, name: str, version: str, *, where: str) -> None:
        """Refuse a manifest found at `name/version` that says it is another model or version."""
        if (self.name, self.version) != (name, version):
            raise IntegrityError(
                f"{where} holds a manifest for {self.ref}, not {name}:{version}; a manifest is "
                "only valid where it was published (refused: replayed or misplaced)"
            )

    def check_paths(self) -> None:
        """Every artifact path is safe and named once (`IntegrityError` otherwise)."""
        seen: set[str] = set()
        for artifact in self.artifacts:
            path = check_artifact_path(artifact.path)
            # one file on case- or normalisation-insensitive disks (NFC vs NFD `é`) is one name
            folded = unicodedata.normalize("NFC", path).casefold()
            nested = any(p.startswith(folded + "/") or folded.startswith(p + "/") for p in seen)
            if folded in seen or nested:
                raise IntegrityError(f"{self.ref}: artifact path {path!r} is named twice")
            seen.add(folded)

    def to_dict(self, *, signed: bool = True) -> dict[str, Any]:
        """The manifest as JSON-ready data; without `signature` when `signed` is False."""
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

    def to_json_bytes(self) -> bytes:
        """The one way a manifest is written: indented JSON, a trailing newline."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode() + b"\n"

    def signed_bytes(self) -> bytes:
        """The bytes an Ed25519 signature covers: RFC 8785 canonical JSON without `signature`."""
        return canonical_json(self.to_dict(signed=False))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        """Parse manifest data; a signed manifest must round-trip exactly (`SignatureError`)."""
        fmt = raw.get("format")
        if fmt != BUNDLE_FORMAT:
            raise BundleError(
                f"unsupported bundle format {fmt!r}; this strato reads {BUNDLE_FORMAT}"
            )
        manifest = cls._parse(raw)
        if "signature" in raw:
            _check_signed_form(manifest, raw)
        return manifest

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> Manifest:
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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"malformed manifest: {exc!r}") from exc

    @classmethod
    def from_json_bytes(cls, data: bytes, *, source: str = MANIFEST) -> Manifest:
        """Parse `manifest.json` bytes; duplicate keys and non-objects are `BundleError`."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{source} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
        try:
            raw = json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise BundleError(f"cannot read {source}: {exc}") from None
        if not isinstance(raw, dict):
            raise BundleError(f"{source} is not a JSON object")
        return cls.from_dict(raw)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read `manifest.json` at `path` (never through a symlink)."""
        if not os.path.lexists(path):
            raise BundleError(f"no {MANIFEST} at {path}")
        try:
            with os.fdopen(open_plain(Path(path)), "rb") as stream:  # no symlink, no FIFO
                data = stream.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc}") from exc
        return cls.from_json_bytes(data, source=str(path))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_signed_form(manifest: Manifest, raw: Mapping[str, Any]) -> None:
    unknown = sorted(set(manifest.extra) - INFO_FIELDS)
    if unknown:
        raise SignatureError(
            f"{manifest.ref}: signed manifest has unknown field(s) {unknown}; this strato cannot "
            "honour them, so it refuses the manifest"
        )
    as_found = canonical_json({k: v for k, v in raw.items() if k != "signature"})
    if as_found != manifest.signed_bytes():
        raise SignatureError(
            f"{manifest.ref}: signed manifest is not in canonical form (a field has another type "
            "or default than the signer wrote); refused"
        )


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (temp file + rename) into `directory`."""
    return write_manifest_bytes(directory, manifest.to_json_bytes())


def write_manifest_bytes(directory: str | os.PathLike[str], body: bytes) -> Path:
    """Write these exact manifest bytes atomically; the file's mode follows the umask."""
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(body)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / MANIFEST
