"""The offline outbox: requests no tier could answer, kept durably in SQLite until `flush()`.

Opt-in (`Client(outbox=PATH or Outbox(...))`) and only through `Client.submit()`: `predict()`
never queues silently, and bad input (not numeric, not finite, too big, unnamed) is refused
with `InvalidInput`, never stored. Each request has an idempotency key (the primary key, sent as
the OIP request `id`; the edge daemon answers a repeated id + body from its cache instead of
running it twice). Bodies are stored as OIP binary bodies through `strato._codec` (no pickle).

Delivery, per `flush()` (`Outbox.flush`):

- rows are claimed in an `IMMEDIATE` transaction under a lease owned by this flush; the lease
  is renewed in the background while the flush runs, so a slow batch is never re-claimed (and
  sent twice) by another flusher; a flusher that dies leaves a lease that expires;
- an answer marks the row `done`; a refusal of the request itself (`InferenceError`) marks it
  `failed`, never resent;
- a `TransportError` while the model's tiers still answer health is the request's fault (a
  poison message: the server fails on it): it is retried with exponential backoff and, after
  `max_attempts`, dead-lettered (`dead`) with its error; later rows are still sent. When no
  tier answers at all, the flush stops and every row waits, uncharged; any other failure of
  one request (an in-process engine's `EngineError`) is charged the same way, while a setup
  failure (`ConfigError`, `BundleError`) puts every row back and is raised;
- `failed()` lists refused and dead-lettered requests with their errors; `requeue(key)` gives
  a dead-lettered one another round. `flush()` reports failures, not only answers
  (`FlushReport`).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._codec import MAX_ELEMENTS, decode_request, encode_request
from strato._errors import (
    BundleError,
    ConfigError,
    InferenceError,
    InvalidInput,
    StratoError,
    TransportError,
)
from strato._inference import InferRequest
from strato._tensors import datatype_of

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterator

    from strato._inference import Prediction

__all__ = ["UNNAMED", "FailedRequest", "FlushReport", "Outbox", "Queued"]

# The input name of an ndarray submitted before any tier told us the model's input names.
UNNAMED = "__strato_unnamed__"
MAX_KEY_LENGTH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT,
    body BLOB NOT NULL,
    header_length INTEGER,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    claimed REAL,
    answered REAL,
    served_by TEXT,
    model_version TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, created);
"""
# Columns added after the first release: added in place to an older outbox file.
_COLUMNS = {"attempts": "INTEGER NOT NULL DEFAULT 0", "next_try": "REAL NOT NULL DEFAULT 0",
            "owner": "TEXT"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Queued:
    """`submit()` could not get an answer now: the request waits in the outbox under `key`."""

    key: str
    model: str


@dataclass(frozen=True, slots=True)
class FailedRequest:
    """A request the outbox will not send again: `state` is ``failed`` (refused as bad input)
    or ``dead`` (dead-lettered after `attempts` failed tries); `error` says why."""

    key: str
    model: str
    state: str
    error: str
    attempts: int


class FlushReport(dict[str, "Prediction"]):
    """What one `flush()` did: key → `Prediction` for the answered requests (it is that dict),
    plus `failed` (key → error: refused or dead-lettered now), `retrying` (key → error: will be
    retried after a backoff) and `waiting` (requests left queued because no tier answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: dict[str, str] = {}
        self.retrying: dict[str, str] = {}
        self.waiting = 0


def check_storable(key: str, inputs: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The inputs as arrays fit to store, or `InvalidInput`: the outbox never keeps bad input."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"an outbox key is a non-empty string of at most {MAX_KEY_LENGTH}")
    if not inputs:
        raise InvalidInput("no inputs to queue")
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name, value in inputs.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"input names are non-empty strings, got {name!r}")
        try:
            array = np.asarray(value)
            datatype_of(array.dtype)  # numeric OIP datatypes only
        except (InvalidInput, ValueError, TypeError) as exc:
            raise InvalidInput(f"input {name!r} is not a numeric tensor: {exc}") from None
        if array.ndim == 0 or 0 in array.shape or math.prod(array.shape) > MAX_ELEMENTS:
            raise InvalidInput(f"input {name!r}: shape {list(array.shape)} cannot be sent")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(f"input {name!r} holds NaN or infinity")
        arrays[name] = array
    return arrays


@dataclass
class _Lease:
    """Keeps renewing the claim on a flush's rows until stopped."""

    outbox: Outbox
    owner: str
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        interval = max(self.outbox.lease_s / 3, 0.01)
        while not self.stop.wait(interval):
            with contextlib.suppress(sqlite3.Error):
                self.outbox._renew(self.owner)


class Outbox:
    """A durable queue of requests in one SQLite file (WAL, synchronous=FULL)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease_s: float = 60.0,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        if lease_s <= 0 or max_attempts < 1 or backoff_s < 0 or max_backoff_s < backoff_s:
            raise ConfigError("outbox: lease_s > 0, max_attempts >= 1, 0 <= backoff_s <= max")
        self.path = Path(path)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            for column, kind in _COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} {kind}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the outbox {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    # --- queueing ------------------------------------------------------------------------
    def put(self, key: str, request: InferRequest) -> bool:
        """Store `request` under `key`; False when that key is already there (stored once).
        Bad input is `InvalidInput` and is not stored."""
        arrays = check_storable(key, request.inputs)
        body, header_length = encode_request(arrays, binary=True)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (key, model, version, body, header_length, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, request.model, request.version, body, header_length, time.time()),
            )
        return cursor.rowcount == 1

    def claim(self, limit: int = 100, *, owner: str = "") -> list[tuple[str, InferRequest]]:
        """Take up to `limit` requests due for sending (oldest first) under a lease for
        `owner`; rows whose lease expired (their flusher died) are due again. A row whose
        stored body no longer decodes is dead-lettered with the reason, never returned."""
        return self._claim(limit, owner)[0]

    def _claim(
        self, limit: int, owner: str
    ) -> tuple[list[tuple[str, InferRequest]], dict[str, str]]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT key, model, version, body, header_length FROM outbox "
                    "WHERE (state = 'pending' AND next_try <= ?) "
                    "OR (state = 'inflight' AND claimed < ?) ORDER BY created LIMIT ?",
                    (now, now - self.lease_s, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE outbox SET state = 'inflight', claimed = ?, owner = ? WHERE key = ?",
                    [(now, owner, row[0]) for row in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        claimed, unreadable = [], {}
        for key, model, version, body, header_length in rows:
            try:
                decoded = decode_request(bytes(body), header_length=header_length)
            except (StratoError, ValueError) as exc:  # damaged: never blocks the rows behind
                unreadable[key] = f"the stored request cannot be read: {exc}"
                self._set(key, "dead", error=unreadable[key])
                continue
            claimed.append((key, InferRequest(model, decoded.inputs, version, key)))
        return claimed, unreadable

    # --- delivery ------------------------------------------------------------------------
    def flush(
        self,
        send: Callable[[InferRequest], Prediction],
        *,
        alive: Callable[[str], bool],
        limit: int = 1000,
    ) -> FlushReport:
        """Send due requests once each through `send`; `alive(model)` tells a poison message
        (tiers answer, this request fails) from an outage (nothing answers)."""
        owner = uuid.uuid4().hex
        report = FlushReport()
        claimed, unreadable = self._claim(limit, owner)
        report.failed.update(unreadable)
        with self._leased(owner):
            for index, (key, request) in enumerate(claimed):
                try:
                    prediction = send(request)
                except InferenceError as exc:
                    self.reject(key, str(exc))
                    report.failed[key] = str(exc)
                except TransportError as exc:
                    if not alive(request.model):
                        for rest, _ in claimed[index:]:
                            self._release(rest, owner)
                        report.waiting = len(claimed) - index
                        break
                    self._charge(key, owner, str(exc), report)
                except (ConfigError, BundleError):  # the setup, not this request: all wait
                    for rest, _ in claimed[index:]:
                        self._release(rest, owner)
                    raise
                except Exception as exc:  # e.g. an in-process engine's EngineError: poison
                    self._charge(key, owner, f"{type(exc).__name__}: {exc}", report)
                else:
                    self.answered(key, prediction.served_by, prediction.model_version)
                    report[key] = prediction
        return report

    @contextlib.contextmanager
    def _leased(self, owner: str) -> Iterator[None]:
        lease = _Lease(self, owner)
        thread = threading.Thread(target=lease.run, name="strato-outbox-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            lease.stop.set()
            thread.join()

    def _renew(self, owner: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET claimed = ? WHERE owner = ? AND state = 'inflight'",
                (time.time(), owner),
            )

    def _charge(self, key: str, owner: str, error: str, report: FlushReport) -> None:
        """One more failed try for a request the tiers refuse to answer: back off, or
        dead-letter it after `max_attempts`."""
        with self._lock:
            row = self._db.execute("SELECT attempts FROM outbox WHERE key = ?", (key,)).fetchone()
            attempts = int(row[0]) + 1 if row else 1
            if attempts >= self.max_attempts:
                state, next_try = "dead", 0.0
                report.failed[key] = error
            else:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
                state, next_try = "pending", time.time() + delay
                report.retrying[key] = error
            self._db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_try = ?, error = ?, owner = NULL "
                "WHERE key = ? AND owner = ?",
                (state, attempts, next_try, error, key, owner),
            )

    def _release(self, key: str, owner: str) -> None:
        """Back to pending, uncharged (no tier answered this time), unless re-claimed."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = 'pending', owner = NULL WHERE key = ? AND owner = ?",
                (key, owner),
            )

    def answered(self, key: str, served_by: str, model_version: str) -> None:
        """Mark `key` done."""
        self._set(key, "done", served_by=served_by, model_version=model_version)

    def reject(self, key: str, error: str) -> None:
        """The request itself was refused (bad input): kept for inspection, never resent."""
        self._set(key, "failed", error=error)

    def release(self, key: str) -> None:
        """Back to pending (no tier answered this time)."""
        self._set(key, "pending")

    def requeue(self, key: str) -> bool:
        """Give a dead-lettered request another `max_attempts` tries; False if it is not dead."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_try = 0 "
                "WHERE key = ? AND state = 'dead'",
                (key,),
            )
        return cursor.rowcount == 1

    def _set(self, key: str, state: str, **fields: Any) -> None:
        columns = "".join(f", {name} = ?" for name in fields)
        with self._lock:
            self._db.execute(
                f"UPDATE outbox SET state = ?, answered = ?, owner = NULL{columns} WHERE key = ?",
                (state, time.time(), *fields.values(), key),
            )

    # --- inspection ----------------------------------------------------------------------
    def failed(self) -> list[FailedRequest]:
        """Requests that will not be sent again (refused or dead-lettered), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, model, state, error, attempts FROM outbox "
                "WHERE state IN ('failed', 'dead') ORDER BY created"
            ).fetchall()
        return [
            FailedRequest(str(k), str(m), str(s), str(e or ""), int(a)) for k, m, s, e, a in rows
        ]

    def state(self, key: str) -> str | None:
        """pending, inflight, done, failed or dead; None for a key never submitted."""
        with self._lock:
            row = self._db.execute("SELECT state FROM outbox WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """Requests per state: pending, inflight, done, failed, dead."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def pending(self) -> int:
        """Requests still to be sent (pending or in flight)."""
        counts = self.counts()
        return counts.get("pending", 0) + counts.get("inflight", 0)

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()
