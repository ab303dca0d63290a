"""Where registries keep their files: a local folder or an S3 prefix.

Both stores write atomically as readers see it: a local version appears by one `rename`; an S3
version appears when its `manifest.json` (uploaded last) does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import ConfigError, ModelNotFound, Unavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["LocalStore", "S3Store", "Store", "open_store"]


class Store(Protocol):
    """Key/value access to a registry root; keys are `/`-separated relative paths."""

    url: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def children(self, prefix: str) -> list[str]: ...
    def keys(self, prefix: str) -> list[str]: ...
    def download(self, key: str, dest: Path) -> None: ...
    def upload_tree(self, source: Path, prefix: str, *, last: str) -> None: ...


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"{key} not found in registry {self.url}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def children(self, prefix: str) -> list[str]:
        path = self._path(prefix) if prefix else self.root
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def upload_tree(self, source: Path, prefix: str, *, last: str) -> None:
        """Copy `source` to `prefix` as one rename, so readers never see half a version."""
        final = self._path(prefix)
        if final.exists():
            raise FileExistsError(f"{prefix} already exists in {self.url}; versions are immutable")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


class S3Store:
    """An `s3://bucket/prefix` registry. Pass a boto3 S3 client to point at any endpoint."""

    def __init__(self, url: str, *, client: Any = None) -> None:
        if not url.startswith("s3://"):
            raise ConfigError(f"not an s3:// url: {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ConfigError(f"no bucket in {url!r}")
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # lazy: boto3 is heavy and only S3 registries need it

            self._client = boto3.client("s3", endpoint_url=os.environ.get("STRATO_S3_ENDPOINT"))
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
            if code in ("NoSuchBucket", "AccessDenied", "403"):
                raise ConfigError(f"{what}: {code} on {self.url}") from exc
            raise Unavailable(f"{what}: S3 error {code}: {exc}", backend="s3") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"{what}: cannot reach S3: {exc}", backend="s3") from exc

    def read_bytes(self, key: str) -> bytes:
        body = self._call(
            key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        )
        return bytes(body["Body"].read())

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data),
        )

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

    def download(self, key: str, dest: Path) -> None:
        self._call(key, lambda: self.client.download_file(self.bucket, self._key(key), str(dest)))

    def upload_tree(self, source: Path, prefix: str, *, last: str) -> None:
        """Upload every file, `last` (the manifest) at the end: a version exists once it does."""
        if self.exists(f"{prefix}/{last}"):
            raise FileExistsError(f"{prefix} already exists in {self.url}; versions are immutable")
        files = sorted(p for p in source.rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: p.relative_to(source).as_posix() == last):
            key = self._key(f"{prefix}/{path.relative_to(source).as_posix()}")
            self._upload(path, key)

    def _upload(self, path: Path, key: str) -> None:
        self._call(key, lambda: self.client.upload_file(str(path), self.bucket, key))


def open_store(root: str | os.PathLike[str], *, s3_client: Any = None) -> LocalStore | S3Store:
    text = os.fspath(root)
    if text.startswith("s3://"):
        return S3Store(text, client=s3_client)
    return LocalStore(text)
