"""The `s3://bucket/prefix` store: conditional writes (`IfNoneMatch="*"` claims a version,
`IfMatch=<etag>` replaces metadata only if unchanged), bounded reads, boto3 imported lazily.

What the store contract promises is in `strato._storage`.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, ModelNotFound, StratoError, Unavailable, VersionExists
from ._files import CHUNK
from ._storage import _UPDATE_ATTEMPTS, CLAIM, Staged, _bounded

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

__all__ = ["S3Store"]

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
