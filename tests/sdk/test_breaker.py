"""The circuit breaker's states and hysteresis, and the online latency tracker."""

from __future__ import annotations

import threading
import time

import pytest
from strato import ConfigError
from strato._breaker import Breaker, BreakerConfig, LatencyTracker


def test_opens_after_n_failures_within_the_window():
    breaker = Breaker(BreakerConfig(failures=3, window_s=10, cooldown_s=20))
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()


def test_failures_spread_beyond_the_window_do_not_open():
    breaker = Breaker(BreakerConfig(failures=2, window_s=0.05, cooldown_s=20))
    breaker.failure()
    time.sleep(0.08)
    breaker.failure()
    assert breaker.state == "closed"


def test_a_success_resets_the_failure_count():
    breaker = Breaker(BreakerConfig(failures=2, window_s=10))
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_half_open_allows_one_probe_and_needs_several_successes():
    breaker = Breaker(BreakerConfig(failures=1, cooldown_s=0.05, successes=2))
    breaker.failure()
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()  # the probe
    assert breaker.state == "half-open"
    assert not breaker.allow()  # one probe at a time
    breaker.success()
    assert breaker.state == "half-open"
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"


def test_failed_probe_reopens_with_a_longer_cooldown():
    breaker = Breaker(BreakerConfig(failures=1, cooldown_s=0.2, max_cooldown_s=5.0))
    breaker.failure()
    time.sleep(0.21)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and breaker.opened == 2
    time.sleep(0.25)
    assert not breaker.allow()  # the cool-down doubled to 0.4 s: hysteresis against flapping
    time.sleep(0.2)
    assert breaker.allow()


def test_release_frees_the_probe_slot():
    breaker = Breaker(BreakerConfig(failures=1, cooldown_s=0.01))
    breaker.failure()
    time.sleep(0.02)
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_only_one_probe_among_threads():
    breaker = Breaker(BreakerConfig(failures=1, cooldown_s=0.01))
    breaker.failure()
    time.sleep(0.02)
    granted = []
    threads = [threading.Thread(target=lambda: granted.append(breaker.allow())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 1


def test_config_is_validated():
    with pytest.raises(ConfigError):
        BreakerConfig(failures=0)
    with pytest.raises(ConfigError):
        BreakerConfig(cooldown_s=10, max_cooldown_s=1)


def test_latency_tracker_quantiles_over_the_recent_samples():
    tracker = LatencyTracker(size=64)
    assert tracker.quantile(0.5) is None and tracker.p95() is None
    for value in range(100):
        tracker.record(value / 1000)
    assert tracker.count == 64  # the ring keeps the last 64: 36..99 ms
    assert tracker.quantile(0.0) == pytest.approx(0.036)
    assert tracker.p95() == pytest.approx(0.096)
    with pytest.raises(ValueError):
        LatencyTracker(size=100)
