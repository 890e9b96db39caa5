"""RuBudget (cosmos_export.throughput: export and restore) on a fake clock: reservations, start times, the burst bound."""

from __future__ import annotations

import threading

import pytest

from cosmos_export.throughput import RuBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_first_request_goes_alone_then_each_waits_for_the_largest_charge():
    clock = FakeClock()
    budget = RuBudget(10.0, clock=clock, sleep=clock.sleep)
    assert budget.acquire() == 0.0  # nothing measured yet: it goes, alone
    budget.settle(0.0, 5.0)  # the first response cost 5 RU: the bucket is 5 RU in debt
    start = clock.now
    assert budget.acquire() == 5.0  # waits 1 s (debt) + 0.5 s (its own 5 RU) at 10 RU/s
    assert clock.now - start == pytest.approx(1.0, abs=0.01)
    budget.settle(5.0, 5.0)
    assert budget.consumed == 10.0 and budget.requests == 2


def test_starts_within_rate_times_window_plus_one_charge():
    clock = FakeClock()
    budget = RuBudget(50.0, clock=clock, sleep=clock.sleep)
    starts = []
    charges = [3.0, 7.5, 2.0, 7.5, 7.5, 1.0] * 40
    for charge in charges:
        reserved = budget.acquire()
        starts.append((clock.now, charge))
        budget.settle(reserved, charge)
    clock.now += 30  # idle a long time: the bucket refills only up to one request's charge, never more
    burst_start = clock.now
    for _ in range(20):
        reserved = budget.acquire()
        starts.append((clock.now, 7.5))
        budget.settle(reserved, 7.5)
    assert sum(c for t, c in starts if t == burst_start) <= 7.5  # no burst after idling
    largest = max(charges)
    for i, (t0, _) in enumerate(starts):
        for window in (0.5, 1.0, 3.0):
            used = sum(c for t, c in starts[i:] if t < t0 + window)
            assert used <= 50.0 * window + largest + 1e-9, (t0, window, used)


def test_no_budget_only_counts():
    budget = RuBudget(None)
    for _ in range(3):
        budget.settle(budget.acquire(), 2.5)
    assert budget.consumed == 7.5 and budget.requests == 3


def test_shared_across_threads():
    budget = RuBudget(2000.0)
    started: list[float] = []
    import time

    def worker() -> None:
        for _ in range(25):
            reserved = budget.acquire()
            started.append(time.monotonic())
            budget.settle(reserved, 10.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    # 100 requests x 10 RU at 2000 RU/s: at least ~0.49 s whatever the thread count (first one is free).
    assert took >= (99 * 10.0) / 2000.0 - 0.02 and budget.consumed == 1000.0


def test_rejects_non_positive_rate():
    with pytest.raises(ValueError, match="must be positive"):
        RuBudget(0)
