"""Where registries keep their files: a local folder or an S3 prefix.

Both stores write atomically as readers see it and never lose a concurrent writer's update:

- a version's artifacts are first *staged* under a unique key (a hidden folder / S3 prefix that
  is never a version), then *committed*: locally by one `rename` of the complete folder (a taken
  version refuses it); on S3 by claiming the version with a conditional
  `PutObject(IfNoneMatch="*")` (exactly one publisher owns it), a server-side copy of the staged
  artifacts, and the manifest put last, also `IfNoneMatch`: the version exists once it does;
- metadata (aliases) is read-modified-written under an `fcntl` lock file locally, and replaced
  with `IfMatch=<etag>` on S3, retried when someone else changed it first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import (
    BundleError,
    ConfigError,
    IntegrityError,
    ModelNotFound,
    StratoError,
    Unavailable,
    VersionExists,
)
from ._files import CHUNK, READ_FLAGS, dir_mode, file_mode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "MAX_METADATA_BYTES",
    "LocalStore",
    "S3Store",
    "Staged",
    "Store",
    "open_store",
    "read_bounded",
]

CLAIM = ".claim"
MAX_METADATA_BYTES = 16 << 20  # a manifest or aliases.json: a hostile registry's 2 GiB file
# is refused after this many bytes, not read into memory first
REMOVED = ".removed"  # what a removed local version leaves behind: its number stays taken
_UPDATE_ATTEMPTS = 64


class Store(Protocol):
    """Key/value access to a registry root; keys are `/`-separated relative paths."""

    url: str

    def read_bytes(self, key: str) -> bytes: ...
    def iter_bytes(self, key: str) -> Iterator[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def children(self, prefix: str) -> list[str]: ...
    def keys(self, prefix: str) -> list[str]: ...
    def update(self, key: str, change: Callable[[bytes | None], bytes]) -> None: ...
    def replace_bytes(self, key: str, data: bytes) -> None: ...
    def stage(self, source: Path, parent: str, files: Sequence[str]) -> Staged: ...
    def commit(self, staged: Staged, prefix: str, manifest: bytes) -> None: ...
    def discard(self, staged: Staged) -> None: ...
    def remove_version(self, prefix: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Staged:
    """A version's artifacts uploaded under a unique staging key, not yet a version."""

    key: str
    files: tuple[str, ...]


class LocalStore:
    """A registry root on local disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_bytes(key))

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The file's bytes in chunks; refuses symlinks and anything outside the root."""
        path = self._path(key)
        root = self.root.resolve()
        try:
            real = path.resolve()
        except OSError as exc:
            raise IntegrityError(f"cannot resolve {key} in registry {self.url}: {exc}") from None
        if real != root / key:
            if not path.exists():
                raise ModelNotFound(f"{key} not found in registry {self.url}")
            raise IntegrityError(f"{key} in registry {self.url} is a symlink; refused")
        try:
            fd = os.open(path, READ_FLAGS)  # O_NONBLOCK: a planted FIFO never blocks the reader
        except FileNotFoundError:
            raise ModelNotFound(f"{key} not found in registry {self.url}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IntegrityError(f"{key} in registry {self.url} is a symlink") from None
            raise IntegrityError(f"cannot read {key} in registry {self.url}: {exc}") from None
        return self._chunks(fd, key)

    def _chunks(self, fd: int, key: str) -> Iterator[bytes]:
        with os.fdopen(fd, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise IntegrityError(f"{key} in registry {self.url} is not a regular file")
            while chunk := stream.read(CHUNK):
                yield chunk

    def replace_bytes(self, key: str, data: bytes) -> None:
        """Write `data` at `key` atomically (temp + rename); the mode follows the umask."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def update(self, key: str, change: Callable[[bytes | None], bytes]) -> None:
        """Read-modify-write `key` under an exclusive `fcntl` lock (`.<name>.lock` beside it)."""
        import fcntl

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = read_bounded(self, key) if os.path.lexists(path) else None
            self.replace_bytes(key, change(current))
        finally:
            os.close(lock)  # closing releases the lock

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def children(self, prefix: str) -> list[str]:
        path = self._path(prefix) if prefix else self.root
        if not path.is_dir():
            return []
        return sorted(
            p.name
            for p in path.iterdir()
            if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
        )

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def remove_version(self, prefix: str) -> None:
        """Delete a version: its manifest first (readers stop seeing it at once), then its
        files; the empty folder stays as a tombstone so the number is never published again."""
        folder = self._path(prefix)
        (folder / "manifest.json").unlink(missing_ok=True)
        for entry in sorted(folder.iterdir(), reverse=True):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (folder / REMOVED).touch()

    def stage(self, source: Path, parent: str, files: Sequence[str]) -> Staged:
        """Copy `files` of `source` into a fresh hidden folder under `parent`."""
        base = self._path(parent)
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        staged = Staged(str(staging.relative_to(self.root)), tuple(files))
        try:
            os.chmod(staging, dir_mode())
            for relpath in files:
                dest = staging / relpath
                dest.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode())
                shutil.copyfile(source / relpath, dest, follow_symlinks=False)
                os.chmod(dest, file_mode())
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def commit(self, staged: Staged, prefix: str, manifest: bytes) -> None:
        """Add the manifest and rename the staged folder to `prefix` (`VersionExists` if taken)."""
        staging, final = self._path(staged.key), self._path(prefix)
        if final.exists():
            raise VersionExists(f"{prefix} already exists in {self.url}; versions are immutable")
        (staging / "manifest.json").write_bytes(manifest)
        os.chmod(staging / "manifest.json", file_mode())
        try:
            os.rename(staging, final)  # a taken version refuses it: not empty
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise VersionExists(
                    f"{prefix} was published by someone else first in {self.url}"
                ) from None
            raise

    def discard(self, staged: Staged) -> None:
        """Remove what `stage` left (nothing after a commit)."""
        shutil.rmtree(self._path(staged.key), ignore_errors=True)


class _Conflict(Exception):
    """S3 refused a conditional write (412/409): someone else wrote first."""


class S3Store:
    """An `s3://bucket/prefix` registry. Pass a boto3 S3 client to point at any endpoint."""

    def __init__(self, url: str, *, client: Any = None, endpoint: str | None = None) -> None:
        if not url.startswith("s3://"):
            raise ConfigError(f"not an s3:// url: {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ConfigError(f"no bucket in {url!r}")
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._endpoint = endpoint

    @property
    def client(self) -> Any:
        if self._client is None:
            from ._settings import make_s3_client  # lazy: boto3 is heavy

            self._client = make_s3_client(self._endpoint)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ModelNotFound(f"{what} not found in registry {self.url}") from None
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise _Conflict(what) from None
            if code in ("NoSuchBucket", "AccessDenied", "403"):
                raise ConfigError(f"{what}: {code} on {self.url}") from exc
            raise Unavailable(f"{what}: S3 error {code}: {exc}", backend="s3") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"{what}: cannot reach S3: {exc}", backend="s3") from exc

    def _get(self, key: str) -> Any:
        return self._call(
            key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        )

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_bytes(key))

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's bytes as they stream in; a dropped link is `Unavailable`."""
        body = self._get(key)["Body"]
        return self._chunks(body, key)

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        """The body as it arrives, one socket read at a time (urllib3's `read1`), so that an
        endpoint trickling bytes is cut once a `CHUNK` takes longer than `stall_s()`: a read of
        a whole chunk would wait for all of it (a byte every 19 s held a pull for weeks)."""
        from urllib3.exceptions import HTTPError  # botocore's own transport

        from ._settings import s3_timeout

        raw: Any = getattr(body, "_raw_stream", None)  # botocore's urllib3 response
        read = getattr(raw, "read1", None) or body.read
        stall = 3 * s3_timeout()
        window, since = 0, time.monotonic()
        while True:
            try:
                chunk = self._call(key, lambda: read(CHUNK))
            except (OSError, ValueError, HTTPError) as exc:  # read timeout, short body, reset
                raise Unavailable(f"{key}: download broke off: {exc}", backend="s3") from exc
            if not chunk:
                body.close()
                return
            window += len(chunk)
            if window >= CHUNK:
                window, since = 0, time.monotonic()
            elif time.monotonic() - since > stall:
                body.close()
                raise Unavailable(
                    f"{key}: the registry sent {window} bytes in {stall:.0f} s; cut off",
                    backend="s3",
                )
            yield chunk

    def _put(self, key: str, data: bytes, **condition: str) -> None:
        self._call(
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **condition
            ),
        )

    def replace_bytes(self, key: str, data: bytes) -> None:
        """One `PutObject`: readers see the old or the new object, never half of one."""
        self._put(key, data)

    def update(self, key: str, change: Callable[[bytes | None], bytes]) -> None:
        """Read-modify-write `key` with `IfMatch=<etag>` (`IfNoneMatch` when absent), retried."""
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = self._get(key)
                current: bytes | None = _bounded(self._chunks(found["Body"], key), key)
                condition = {"IfMatch": str(found["ETag"])}
            except ModelNotFound:
                current, condition = None, {"IfNoneMatch": "*"}
            try:
                self._put(key, change(current), **condition)
                return
            except _Conflict:
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise Unavailable(f"{key}: {_UPDATE_ATTEMPTS} conflicting writers in a row", backend="s3")

    def exists(self, key: str) -> bool:
        try:
            self._call(key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)))
        except ModelNotFound:
            return False
        return True

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = (
            self._key(prefix).rstrip("/") + "/"
            if prefix
            else (self.prefix + "/" if self.prefix else "")
        )
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        pages = self._call(prefix or "/", lambda: list(paginator.paginate(**kwargs)))
        for page in pages:
            page["_prefix"] = full
            yield page

    def children(self, prefix: str) -> list[str]:
        names = set()
        for page in self._pages(prefix, "/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(page["_prefix"]) :].strip("/")
                if name and not name.startswith("."):
                    names.add(name)
        return sorted(names)

    def keys(self, prefix: str) -> list[str]:
        found = []
        for page in self._pages(prefix, None):
            found += [obj["Key"][len(page["_prefix"]) :] for obj in page.get("Contents", [])]
        return sorted(found)

    def remove_version(self, prefix: str) -> None:
        """Delete a version: its manifest first, then its objects; the claim stays, so the
        number is never published again."""
        keys = [f"{prefix}/manifest.json"]
        keys += [f"{prefix}/{p}" for p in self.keys(prefix) if p not in (CLAIM, "manifest.json")]
        for key in keys:
            self._delete(self._key(key))

    def stage(self, source: Path, parent: str, files: Sequence[str]) -> Staged:
        """Upload `files` under the unique key `<parent>/.staging/<uuid>/`."""
        staged = Staged(f"{parent}/.staging/{uuid.uuid4().hex}", tuple(files))
        try:
            for relpath in files:
                self._upload(source / relpath, self._key(f"{staged.key}/{relpath}"))
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def commit(self, staged: Staged, prefix: str, manifest: bytes) -> None:
        """Claim `prefix` (`IfNoneMatch="*"`: one owner), copy the staged artifacts in on the
        server, then commit the manifest (also `IfNoneMatch`): the version exists from then on."""
        try:
            self._put(f"{prefix}/{CLAIM}", staged.key.encode(), IfNoneMatch="*")
        except _Conflict:
            raise VersionExists(
                f"{prefix} is taken in {self.url}; versions are immutable"
            ) from None
        if self.exists(f"{prefix}/manifest.json"):  # published before claims existed
            raise VersionExists(f"{prefix} already exists in {self.url}; versions are immutable")
        for relpath in staged.files:
            self._copy(self._key(f"{staged.key}/{relpath}"), self._key(f"{prefix}/{relpath}"))
        try:
            self._put(f"{prefix}/manifest.json", manifest, IfNoneMatch="*")
        except _Conflict:
            raise VersionExists(f"{prefix} was committed by someone else in {self.url}") from None

    def discard(self, staged: Staged) -> None:
        """Delete the staged objects (best effort: a leftover is never a version)."""
        for relpath in staged.files:
            with contextlib.suppress(StratoError):
                self._delete(self._key(f"{staged.key}/{relpath}"))

    def _copy(self, source: str, target: str) -> None:
        where = {"Bucket": self.bucket, "Key": source}
        self._call(target, lambda: self.client.copy(where, self.bucket, target))

    def _delete(self, key: str) -> None:
        self._call(key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def _upload(self, path: Path, key: str) -> None:
        self._call(key, lambda: self.client.upload_file(str(path), self.bucket, key))


def read_bounded(store: Store, key: str, limit: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes of a metadata object (a manifest, `aliases.json`), refused (`BundleError`) as
    soon as more than `limit` arrive: never read whole into memory first."""
    return _bounded(store.iter_bytes(key), key, limit)


def _bounded(chunks: Iterator[bytes], key: str, limit: int = MAX_METADATA_BYTES) -> bytes:
    found, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            raise BundleError(f"{key} is larger than {limit} bytes; refused")
        found.append(chunk)
    return b"".join(found)


def open_store(
    root: str | os.PathLike[str], *, s3_client: Any = None, s3_endpoint: str | None = None
) -> LocalStore | S3Store:
    """The store a registry root names: `s3://bucket/prefix`, else a local folder."""
    text = os.fspath(root)
    if text.startswith("s3://"):
        return S3Store(text, client=s3_client, endpoint=s3_endpoint)
    return LocalStore(text)
