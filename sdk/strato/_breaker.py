"""Per-backend circuit breaker and online latency tracker, both O(1) per call.

A breaker is *closed* (traffic flows) until `failures` failures land within `window_s`; it then
*opens* (the router skips the backend) for `cooldown_s`. After the cool-down it is *half-open*:
one request at a time probes the backend. `successes` probes in a row close it again; a failed
probe re-opens it with a cool-down twice as long (up to `max_cooldown_s`). Needing several
successes to close, and a growing cool-down, is the hysteresis that keeps a flaky backend from
flapping between states on every call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from strato._errors import ConfigError

__all__ = ["Breaker", "BreakerConfig", "LatencyTracker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers."""

    failures: int = 5
    window_s: float = 10.0
    cooldown_s: float = 2.0
    max_cooldown_s: float = 30.0
    successes: int = 2

    def __post_init__(self) -> None:
        if self.failures < 1 or self.successes < 1:
            raise ConfigError("breaker failures and successes must be at least 1")
        if self.window_s <= 0 or self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ConfigError("breaker window_s, cooldown_s > 0 and max_cooldown_s >= cooldown_s")


class Breaker:
    """The circuit breaker of one backend. Thread-safe; the closed path takes no lock."""

    __slots__ = (
        "_cooldown",
        "_failures",
        "_lock",
        "_opened_at",
        "_probing",
        "_successes",
        "config",
        "opened",
        "state",
    )

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self.state = CLOSED
        self.opened = 0  # how many times it opened: tests and metrics read it
        self._failures: deque[float] = deque(maxlen=self.config.failures)
        self._successes = 0
        self._opened_at = 0.0
        self._cooldown = self.config.cooldown_s
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open, only one probe at a time."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN:
                if time.monotonic() - self._opened_at < self._cooldown:
                    return False
                self.state = HALF_OPEN
                self._successes = 0
                self._probing = False
            if self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        if self.state == CLOSED:
            if self._failures:
                self._failures.clear()
            return
        with self._lock:
            self._probing = False
            if self.state != HALF_OPEN:
                return
            self._successes += 1
            if self._successes >= self.config.successes:
                self.state = CLOSED
                self._failures.clear()
                self._cooldown = self.config.cooldown_s

    def failure(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._probing = False
            if self.state == HALF_OPEN:
                self._cooldown = min(self._cooldown * 2, self.config.max_cooldown_s)
                self._open(now)
                return
            if self.state == OPEN:
                return
            failures = self._failures
            failures.append(now)
            if len(failures) == failures.maxlen and now - failures[0] <= self.config.window_s:
                self._open(now)

    def release(self) -> None:
        """A probe ended without a verdict (cancelled, or the request was bad): free the slot."""
        if self.state != CLOSED:
            with self._lock:
                self._probing = False

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened += 1
        self._opened_at = now
        self._failures.clear()

    def __repr__(self) -> str:
        return f"Breaker(state={self.state!r}, opened={self.opened})"


class LatencyTracker:
    """The last `size` latencies of a backend in a ring buffer; p95 computed on demand."""

    __slots__ = ("_count", "_mask", "_p95", "_samples", "_sorted_at")

    def __init__(self, size: int = 256) -> None:
        if size & (size - 1):
            raise ValueError("size must be a power of two")
        self._samples = [0.0] * size
        self._mask = size - 1
        self._count = 0
        self._sorted_at = -1
        self._p95 = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency (seconds)."""
        count = self._count
        self._samples[count & self._mask] = seconds
        self._count = count + 1

    @property
    def count(self) -> int:
        return min(self._count, self._mask + 1)

    def quantile(self, q: float) -> float | None:
        """The `q` quantile (seconds) of the recent samples, or None before there are any."""
        count = self.count
        if count == 0:
            return None
        ordered = sorted(self._samples[:count])
        return ordered[min(count - 1, int(q * count))]

    def p95(self, *, min_samples: int = 20) -> float | None:
        """The recent p95, refreshed every 16 samples (so the hot path never sorts per call)."""
        if self._count < min_samples:
            return None
        if self._sorted_at < 0 or self._count - self._sorted_at >= 16:
            self._p95 = self.quantile(0.95) or 0.0
            self._sorted_at = self._count
        return self._p95
