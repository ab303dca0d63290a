"""Plain files on local disk: modes that follow the umask, reads that never follow a symlink."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CHUNK",
    "READ_FLAGS",
    "dir_mode",
    "file_chunks",
    "file_mode",
    "open_plain",
    "sha256_file",
]

CHUNK = 1 << 20


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0644 under the usual 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets under this process's umask (0755 under the usual 022)."""
    return 0o777 & ~_umask()


# O_NONBLOCK: opening a FIFO planted where a file should be returns at once (and is then refused
# as not a regular file) instead of blocking until a writer appears; regular files ignore it.
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def open_plain(path: Path) -> int:
    """A read fd on a regular file, never through a symlink (`IntegrityError` otherwise)."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        raise IntegrityError(f"cannot open {path.name}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{path.name} is not a regular file")
    return fd


def file_chunks(path: Path) -> Iterator[bytes]:
    """A plain file's bytes in chunks (see `open_plain`)."""
    with os.fdopen(open_plain(path), "rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file (never followed through a symlink)."""
    digest = hashlib.sha256()
    for chunk in file_chunks(Path(path)):
        digest.update(chunk)
    return digest.hexdigest()
