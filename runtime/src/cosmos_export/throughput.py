"""What a run may spend on Cosmos DB: the request-unit budget and the adaptive concurrency, shared by its threads.

Export (every feed-range thread of a run) and restore (every writer thread) use the same two pieces:

- `RuBudget`: a token bucket of request units (`EXPORT_MAX_RU_PER_SECOND`). A request's charge is only known
  from its response (`x-ms-request-charge`), so each request reserves the largest charge seen so far before it
  is sent and settles the difference after. The bucket holds at most that one charge, so a run never bursts
  beyond one page's (or one write's) charge after idling.
- `AdaptiveConcurrency`: how many requests may be in flight. The SDK retries each throttled request itself
  (honouring `x-ms-retry-after-ms`); when throttling is sustained (several of the last requests needed those
  retries, or one ran out of them) the worker halves its own concurrency instead of hammering, and raises it
  again by one after a run of unthrottled requests (additive increase, multiplicative decrease, as TCP does).
  Every change is logged (`concurrency_lowered` / `concurrency_raised`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class RuBudget:
    """A request-unit token bucket shared by every thread of a run.

    Over any window of W seconds the charges of the requests started in it stay within
    ru_per_second * W plus one request's charge. The bucket may go into debt when a response costs more than
    was reserved (later requests then wait). `ru_per_second=None`: no budget, charges are only counted.
    """

    def __init__(
        self,
        ru_per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if ru_per_second is not None and ru_per_second <= 0:
            raise ValueError(f"ru_per_second={ru_per_second} must be positive (or None for no budget)")
        self.rate = ru_per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()
        self._largest = 0.0
        self._unmeasured_in_flight = False
        self.consumed = 0.0
        self.requests = 0
        #: Seconds requests spent waiting for the budget, summed over threads.
        self.waited_seconds = 0.0

    @property
    def largest_charge(self) -> float:
        return self._largest

    def acquire(self) -> float:
        """Wait until a request may start; returns what it reserved (pass it to `settle`)."""
        if self.rate is None:
            return 0.0
        began = self._clock()
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    self._tokens = min(self._largest, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._largest == 0.0:
                        # Nothing measured yet: one request alone, so the first charge is known before others go.
                        if not self._unmeasured_in_flight:
                            self._unmeasured_in_flight = True
                            return 0.0
                        wait_for = 0.005
                    elif self._tokens >= self._largest:
                        self._tokens -= self._largest
                        return self._largest
                    else:
                        wait_for = (self._largest - self._tokens) / self.rate
                self._sleep(min(max(wait_for, 0.001), 1.0))
        finally:
            waited = self._clock() - began
            with self._lock:
                self.waited_seconds += waited

    def settle(self, reserved: float, charge: float) -> None:
        with self._lock:
            self.consumed += charge
            self.requests += 1
            if self.rate is None:
                return
            self._tokens += reserved - charge
            self._largest = max(self._largest, charge)
            self._unmeasured_in_flight = False


#: Of the last WINDOW requests, this many throttled (the SDK had to retry them) is sustained throttling.
THROTTLE_WINDOW = 10
THROTTLED_IN_WINDOW = 3
#: Unthrottled requests in a row before the concurrency goes up by one again.
RECOVER_AFTER = 20


class AdaptiveConcurrency:
    """At most `limit` requests in flight; the limit halves on sustained throttling and recovers by one."""

    def __init__(
        self,
        maximum: int,
        *,
        log: Any = None,
        recover_after: int = RECOVER_AFTER,
        window: int = THROTTLE_WINDOW,
        throttled_in_window: int = THROTTLED_IN_WINDOW,
    ):
        if maximum < 1:
            raise ValueError(f"maximum={maximum} must be at least 1")
        self.maximum = self.limit = self.lowest = maximum
        self._log = log
        self._recover_after = recover_after
        self._throttled_in_window = throttled_in_window
        self._recent: deque[bool] = deque(maxlen=window)
        self._clean = 0
        self._in_flight = 0
        self._cond = threading.Condition()
        #: How often the limit went down, and how many requests were throttled (SDK retries or escaped 429s).
        self.lowered = 0
        self.throttled = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `limit` in-flight places while the request runs."""
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def record(self, *, throttle_retries: int = 0, exhausted: bool = False) -> None:
        """One request's outcome: how often the SDK retried it on 429, or whether a 429 got past its retries."""
        throttled = exhausted or throttle_retries > 0
        with self._cond:
            self._recent.append(throttled)
            if throttled:
                self.throttled += 1
                self._clean = 0
                if exhausted or sum(self._recent) >= self._throttled_in_window:
                    self._lower("429 beyond the SDK's retries" if exhausted else "sustained 429s")
                return
            self._clean += 1
            if self.limit < self.maximum and self._clean >= self._recover_after:
                self.limit += 1
                self._clean = 0
                self._cond.notify_all()
                if self._log is not None:
                    self._log.info("concurrency_raised", concurrency=self.limit, maximum=self.maximum)

    def _lower(self, reason: str) -> None:
        self._recent.clear()  # the next decision waits for fresh evidence at the new level
        new = max(1, self.limit // 2)
        if new == self.limit:
            return
        self.limit = new
        self.lowest = min(self.lowest, new)
        self.lowered += 1
        if self._log is not None:
            self._log.warning("concurrency_lowered", concurrency=new, maximum=self.maximum, reason=reason)


@dataclass
class Throughput:
    """The budget and the concurrency one run's threads share."""

    budget: RuBudget
    concurrency: AdaptiveConcurrency

    @classmethod
    def of(cls, ru_per_second: float | None, concurrency: int, log: Any = None) -> Throughput:
        return cls(RuBudget(ru_per_second), AdaptiveConcurrency(concurrency, log=log))

    @contextmanager
    def request(self, charge: Callable[[], float]) -> Iterator[None]:
        """Around one Cosmos request: wait for the budget and a slot; settle with what `charge()` grew by."""
        # The slot first: a request waiting for the budget already counts as in flight, so requests never
        # queue up behind a lowered concurrency with their RUs reserved and then arrive together.
        with self.concurrency.slot():
            reserved = self.budget.acquire()
            before = charge()
            try:
                yield
            finally:
                self.budget.settle(reserved, charge() - before)

    def report(self) -> dict[str, float | int | None]:
        """What the run spent and how it was held back (the summary's and the log's figures)."""
        return {
            "max_ru_per_second": self.budget.rate,
            "request_units": round(self.budget.consumed, 2),
            "budget_wait_seconds": round(self.budget.waited_seconds, 3),
            "throttled_requests": self.concurrency.throttled,
            "concurrency_lowered": self.concurrency.lowered,
            "lowest_concurrency": self.concurrency.lowest,
        }
