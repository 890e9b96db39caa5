"""The export's RU budget and adaptive concurrency: against the gateway double, which charges per KB returned.

The budget test reads the double's request log (arrival time and x-ms-request-charge of every change-feed
request) and checks every 5-second window of the run; the storm test throttles far beyond the SDK's own
retries and checks that the worker lowered its concurrency, recovered, and committed every document once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from cosmos_export import audit
from cosmos_export.throughput import AdaptiveConcurrency, Throughput
from tests.runtime.test_export import DB, env, exported, json_logs, make_docs, run  # noqa: F401  (fixtures)

WINDOW = 5.0


def windows(log: list[tuple[float, float]], width: float, step: float = 0.25) -> list[float]:
    """RU charged in every window [t, t + width) from the first request to the last request - width."""
    first, last = log[0][0], log[-1][0]
    out = []
    t = first
    while t + width <= last:
        out.append(sum(c for at, c in log if t <= at < t + width))
        t += step
    return out


def test_budget_holds_every_5_second_window_within_10_percent(env, capsys, json_logs):
    state = env["state"]
    state.upsert_many(DB, "orders", make_docs(6000))
    budget = 150.0  # RU/s; a page of 100 documents here is ~29 KB with the system properties, 29 RU: ~12 s
    settings = env["settings"].model_copy(update={"max_ru_per_second": budget, "cosmos_containers": ("orders",)})
    state.request_log = []
    summary = run(env, "snapshot", settings=settings, log=audit.get_logger())
    [result] = summary.containers
    assert result.documents == 6000
    feed = sorted((at, charge) for at, op, status, charge, _ in state.request_log if op == "changefeed.read")
    largest = max(c for _, c in feed)
    assert 20 <= largest <= 0.1 * WINDOW * budget  # charges grow with the bytes returned; a page < 10% of a window
    used = windows(feed, WINDOW)
    assert len(used) >= 10, f"the run was too short to measure: {feed[-1][0] - feed[0][0]:.1f} s"
    for ru in used:
        # Within 10% of the budget, and above it never by more than one page's charge (plus loopback jitter).
        assert abs(ru - budget * WINDOW) <= 0.1 * budget * WINDOW, (ru, used)
        assert ru <= budget * WINDOW + largest + 1.0, (ru, used)
    # Every charge the double sent is counted once, and the run reports its budget and rate.
    assert result.request_charge == pytest.approx(sum(c for _, c in feed), abs=0.1)
    assert result.max_ru_per_second == budget
    assert abs(result.ru_per_second - budget) <= 0.1 * budget
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    committed = next(x for x in lines if x["event"] == "container_committed")
    assert committed["max_ru_per_second"] == budget and committed["budget_wait_seconds"] > 5
    metrics = next(x for x in lines if x["event"] == "metrics")
    assert metrics["RequestUnitsPerSecond"] == result.ru_per_second


def test_429_storm_lowers_concurrency_recovers_and_commits_every_document_once(env, capsys, json_logs):
    state = env["state"]
    docs = make_docs(3000)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(update={"concurrency": 4, "page_size": 40, "cosmos_containers": ("orders",)})
    # Far more 429s than the SDK retries one request (30): some requests get past its retries.
    state.throttle_next(150, retry_after_ms=5, operation="changefeed.read")
    state.request_log = []
    summary = run(env, "snapshot", settings=settings, log=audit.get_logger())
    [result] = summary.containers
    throttled = sum(1 for _, op, status, _, _ in state.request_log if op == "changefeed.read" and status == 429)
    assert throttled == 150 and result.throttled_requests >= 1
    assert result.concurrency_lowered >= 1 and result.lowest_concurrency < 4
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    events = [x["event"] for x in lines]
    lowered = [x for x in lines if x["event"] == "concurrency_lowered"]
    assert lowered and all(x["concurrency"] < x["maximum"] == 4 and x["reason"] for x in lowered)
    first_lowered = events.index("concurrency_lowered")
    assert "concurrency_raised" in events[first_lowered:]  # it recovers once the storm is over
    # Committed: every document exactly once, byte-exact.
    got = exported(env, "orders", result.run_id)
    ids = Counter(d["id"] for d in got)
    assert len(got) == 3000 and set(ids) == {d["id"] for d in docs} and max(ids.values()) == 1


# --- AdaptiveConcurrency alone -------------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, **kw) -> None:
        self.lines.append((event, kw))

    warning = info


def test_sustained_throttling_halves_the_limit_and_clean_requests_raise_it_by_one():
    log = Log()
    gate = AdaptiveConcurrency(8, log=log, recover_after=5, window=10, throttled_in_window=3)
    gate.record(throttle_retries=1)
    gate.record()
    gate.record(throttle_retries=2)
    assert gate.limit == 8  # two throttled requests of the last ten: the SDK's retries are enough
    gate.record(throttle_retries=1)
    assert gate.limit == 4 and log.lines[-1] == (
        "concurrency_lowered",
        {"concurrency": 4, "maximum": 8, "reason": "sustained 429s"},
    )
    gate.record(exhausted=True)  # a 429 got past the SDK's retries: lowered at once
    assert gate.limit == 2 and log.lines[-1][1]["reason"] == "429 beyond the SDK's retries"
    for _ in range(5):
        gate.record()
    assert gate.limit == 3 and log.lines[-1] == ("concurrency_raised", {"concurrency": 3, "maximum": 8})
    for _ in range(100):
        gate.record()
    assert gate.limit == 8 and (gate.lowest, gate.lowered, gate.throttled) == (2, 2, 4)
    for _ in range(20):
        gate.record(exhausted=True)
    assert gate.limit == 1  # never below one


def test_slots_never_exceed_the_lowered_limit():
    gate = AdaptiveConcurrency(4)
    for _ in range(3):
        gate.record(exhausted=True)
    assert gate.limit == 1
    in_flight, most = 0, 0
    lock = threading.Lock()

    def request() -> None:
        nonlocal in_flight, most
        with gate.slot():
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            time.sleep(0.01)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def test_throughput_settles_what_the_charge_grew_by():
    throughput = Throughput.of(None, 2)
    charged = [0.0]
    with throughput.request(lambda: charged[0]):
        charged[0] += 7.5
    with pytest.raises(RuntimeError):
        with throughput.request(lambda: charged[0]):
            charged[0] += 2.5
            raise RuntimeError("the request failed after the response was charged")
    assert throughput.budget.consumed == 10.0 and throughput.budget.requests == 2
