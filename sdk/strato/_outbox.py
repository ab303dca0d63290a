"""The offline outbox: requests no tier could answer, kept durably in SQLite until `flush()`.

Opt-in (`Client(outbox=PATH)`) and only through `Client.submit()`: `predict()` never queues
silently. Each request has an idempotency key (the primary key, also sent as the OIP request
`id`): submitting the same key twice stores it once, and `flush()` claims rows in an
`IMMEDIATE` transaction before sending them, so two flushers never send the same request; a
row is marked answered in the same process right after its answer arrives. Bodies are stored
as OIP binary bodies through `strato._codec` (no pickle).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato._codec import decode_request, encode_request
from strato._errors import ConfigError
from strato._messages import InferRequest

if TYPE_CHECKING:
    import os

__all__ = ["UNNAMED", "Outbox", "Queued"]

# The input name of an ndarray submitted before any tier told us the model's input names.
UNNAMED = "__strato_unnamed__"

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


@dataclass(frozen=True, slots=True)
class Queued:
    """`submit()` could not get an answer now: the request waits in the outbox under `key`."""

    key: str
    model: str


class Outbox:
    """A durable queue of requests in one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: str | os.PathLike[str], *, lease_s: float = 60.0) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the outbox {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def put(self, key: str, request: InferRequest) -> bool:
        """Store `request` under `key`; False when that key is already there (stored once)."""
        body, header_length = encode_request(request.inputs, binary=True)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (key, model, version, body, header_length, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, request.model, request.version, body, header_length, time.time()),
            )
        return cursor.rowcount == 1

    def claim(self, limit: int = 100) -> list[tuple[str, InferRequest]]:
        """Take up to `limit` pending requests (oldest first) for sending; stale claims return."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT key, model, version, body, header_length FROM outbox WHERE state = 'pending' "
                    "OR (state = 'inflight' AND claimed < ?) ORDER BY created LIMIT ?",
                    (now - self.lease_s, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE outbox SET state = 'inflight', claimed = ? WHERE key = ?",
                    [(now, row[0]) for row in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        claimed = []
        for key, model, version, body, header_length in rows:
            decoded = decode_request(bytes(body), header_length=header_length)
            claimed.append((key, InferRequest(model, decoded.inputs, version, key)))
        return claimed

    def answered(self, key: str, served_by: str, model_version: str) -> None:
        self._set(key, "done", served_by=served_by, model_version=model_version)

    def failed(self, key: str, error: str) -> None:
        """The request itself was refused (bad input): kept for inspection, never resent."""
        self._set(key, "failed", error=error)

    def release(self, key: str) -> None:
        """Back to pending (no tier answered this time)."""
        self._set(key, "pending")

    def _set(self, key: str, state: str, **fields: Any) -> None:
        columns = "".join(f", {name} = ?" for name in fields)
        with self._lock:
            self._db.execute(
                f"UPDATE outbox SET state = ?, answered = ?{columns} WHERE key = ?",
                (state, time.time(), *fields.values(), key),
            )

    def state(self, key: str) -> str | None:
        """pending, inflight, done or failed; None for a key never submitted."""
        with self._lock:
            row = self._db.execute("SELECT state FROM outbox WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """Requests per state: pending, inflight, done, failed."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def pending(self) -> int:
        counts = self.counts()
        return counts.get("pending", 0) + counts.get("inflight", 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
