"""Where registries keep their files: the store contract, and the local-folder store (the S3
store is `strato._storage_s3`).

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

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ._errors import (
    BundleError,
    IntegrityError,
    ModelNotFound,
    VersionExists,
)
from ._files import CHUNK, READ_FLAGS, dir_mode, file_mode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "MAX_METADATA_BYTES",
    "LocalStore",
    "Staged",
    "Store",
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
