"""Repeated requests answered once: the edge daemon's cache of recent answers by request id.

The SDK's outbox sends each queued request with its idempotency key as the OIP request `id`;
a flusher that dies after sending, or loses its lease, may send the same request again. A
request that repeats the `id` AND the exact body (and header length) of a recent one, for the
same model version, gets the first answer again instead of a second run; one still running is
awaited, not started twice. Plain OIP clients that reuse ids for different inputs are unaffected:
their bodies differ. The cache is bounded in entries, bytes and age.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from strato.serving import Answer

__all__ = ["AnswerCache", "request_key"]

RequestKey = tuple[str, str, str, bytes]


def request_key(model: str, version: str, request_id: str, body: bytes, extra: str) -> RequestKey:
    """What makes two requests the same: model version, id, and a digest of the body."""
    digest = hashlib.blake2b(body, digest_size=16)
    digest.update(extra.encode())
    return (model, version, request_id, digest.digest())


@dataclass(slots=True)
class _Entry:
    answer: Answer
    stored_at: float


class AnswerCache:
    """Recent answers by `request_key`, least recently used out first."""

    def __init__(
        self, *, max_entries: int = 4096, max_bytes: int = 64 << 20, ttl_s: float = 600.0
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.replays = 0  # answers given again instead of running a request twice
        self._answers: OrderedDict[RequestKey, _Entry] = OrderedDict()
        self._running: dict[RequestKey, asyncio.Future[Answer]] = {}
        self._bytes = 0

    async def answer(self, key: RequestKey, compute: Callable[[], Awaitable[Answer]]) -> Answer:
        """The cached answer for `key`, the one being computed, or `compute()`'s (then kept)."""
        cached = self._get(key)
        if cached is not None:
            self.replays += 1
            return cached
        running = self._running.get(key)
        if running is not None:
            self.replays += 1
            return await asyncio.shield(running)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            answer = await compute()
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)  # a waiting duplicate gets the same error
                future.exception()  # retrieved: never logged as lost; failures are not cached
            else:
                future.cancel()
            raise
        finally:
            self._running.pop(key, None)
        future.set_result(answer)
        self._put(key, answer)
        return answer

    def _get(self, key: RequestKey) -> Answer | None:
        entry = self._answers.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry.stored_at > self.ttl_s:
            self._drop(key)
            return None
        self._answers.move_to_end(key)
        return entry.answer

    def _put(self, key: RequestKey, answer: Answer) -> None:
        size = len(answer.body)
        if size > self.max_bytes // 4:
            return  # one huge answer would flush everything else
        self._answers[key] = _Entry(answer, time.monotonic())
        self._bytes += size
        while len(self._answers) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._answers)))

    def _drop(self, key: RequestKey) -> None:
        entry = self._answers.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.answer.body)

    def __len__(self) -> int:
        return len(self._answers)
