"""The worker as a subprocess (`cosmos-export run`) through the whole identity chain, killed at random points.

Every trial: change some documents, start the worker, SIGKILL or SIGTERM it
after a random delay, then rerun it to success. After all trials every seeded
or changed (id, version) is committed exactly once across the manifests and
every manifest verifies. RELIABILITY_KILL_TRIALS sets the number of trials.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

from tests.reliability.harness import committed, env_int, make_docs, record, versions
from tests.reliability.sandbox_world import ECS_STOP_TIMEOUT

TRIALS = env_int("RELIABILITY_KILL_TRIALS", 10)
SEED_DOCS = 3000


def test_kills_at_random_points_never_lose_or_repeat_a_document(sandbox):
    rng = random.Random(env_int("RELIABILITY_SEED", 20261123))
    container, prefix = "orders", sandbox.new_prefix()
    target = sandbox.target(prefix, container)
    docs = make_docs(SEED_DOCS)
    sandbox.seed(container, docs)
    expected = versions(docs)
    duration = 6.0  # refined by each clean rerun
    outcomes: Counter = Counter()
    drains: list[float] = []
    for trial in range(TRIALS):
        if trial:
            changed = rng.sample(range(SEED_DOCS), 150)
            batch = [{**d, "v": trial + 1} for d in make_docs(SEED_DOCS) if d["n"] in set(changed)]
            batch += make_docs(20, version=trial + 1, offset=SEED_DOCS + 20 * trial, tag="new")
            sandbox.seed(container, batch)
            expected += versions(batch)
        sig = signal.SIGTERM if trial % 3 == 2 else signal.SIGKILL
        before = committed(sandbox.s3, target, check_verify=False).manifests
        process = sandbox.start(prefix, container)
        time.sleep(rng.uniform(0.2, duration * 1.1))
        if process.poll() is None:
            took = sandbox.stop(process, sig)
            if sig == signal.SIGTERM:
                drains.append(took)
                assert took < ECS_STOP_TIMEOUT, f"SIGTERM drain took {took:.1f}s"
                # -15: SIGTERM arrived during interpreter start-up, before the CLI installed its handler.
                assert process.returncode in (0, 143, -signal.SIGTERM), sandbox.finish(process).stderr[-2000:]
            stopped = sandbox.finish(process)
            if sig == signal.SIGTERM and stopped.code == 143:
                assert "SIGTERM received" in stopped.last_line
        else:
            stopped = sandbox.finish(process)
            assert stopped.code == 0, stopped.stderr[-2000:]
        after = committed(sandbox.s3, target, check_verify=False).manifests
        outcomes[
            f"{signal.Signals(sig).name}:{'after-commit' if after > before else 'before-commit'}"
            if stopped.code != 0
            else "finished-before-signal"
        ] += 1
        rerun = sandbox.run(prefix, container)
        assert rerun.code == 0, rerun.stderr[-3000:]
        duration = max(2.0, rerun.seconds)
    got = committed(sandbox.s3, target)
    counts = got.counts()
    missing = expected - counts
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not missing and not repeated and set(counts) == set(expected), (
        f"missing {sum(missing.values())}, repeated {len(repeated)}, unexpected {len(set(counts) - set(expected))}"
    )
    kills = sum(n for k, n in outcomes.items() if k.startswith("SIGKILL"))
    terms = sum(n for k, n in outcomes.items() if k.startswith("SIGTERM"))
    record(
        f"Process: SIGKILL ({kills}) / SIGTERM ({terms}) at random points, each followed by a rerun",
        trials=TRIALS,
        documents=len(got.docs),
        outcome=(
            f"every (id, version) committed exactly once; {dict(sorted(outcomes.items()))}; "
            f"SIGTERM drain max {max(drains, default=0):.1f}s (stop timeout {ECS_STOP_TIMEOUT:.0f}s)"
        ),
    )


def test_two_workers_at_once_exactly_one_commits(sandbox):
    container, prefix = "customers", sandbox.new_prefix()
    target = sandbox.target(prefix, container)
    docs = make_docs(2500, tag="cust")
    sandbox.seed(container, docs)
    trials = env_int("RELIABILITY_RACE_TRIALS", 2)
    raced = 0
    for trial in range(trials):
        if trial:
            batch = make_docs(300, tag="cust", version=trial + 1)
            sandbox.seed(container, batch)
            docs = batch
        a, b = sandbox.start(prefix, container, tag="a"), sandbox.start(prefix, container, tag="b")
        results = [sandbox.finish(a), sandbox.finish(b)]
        codes = sorted(r.code for r in results)
        loser = next((r for r in results if r.code != 0), None)
        if codes == [0, 0]:
            # Possible only when one finished before the other loaded its state: then the second exported nothing new.
            continue
        assert codes == [0, 1], [r.stderr[-1500:] for r in results]
        assert "another export run committed sequence" in loser.last_line, loser.last_line
        raced += 1
    got = committed(sandbox.s3, target)
    counts = got.counts()
    assert max(counts.values()) == 1 and set(counts) >= set(versions(docs))
    assert raced >= 1, "the two workers never overlapped: the race was not exercised"
    record(
        "Two workers started at once on one container",
        trials=trials,
        documents=len(got.docs),
        outcome=(
            f"{raced}/{trials} overlapped: exactly one committed, the other exited 1 with 'another export "
            f"run committed sequence N first'; no document twice"
        ),
    )


def current_versions(sandbox, container: str) -> Counter:
    """(id, v) of every document the container holds right now, read from the gateway double itself."""
    state = sandbox.running.cosmos_state
    return Counter(
        (d["id"], d.get("v")) for d in state.container(sandbox.plan.cosmos_database, container).iter_documents()
    )


def manifests_after(sandbox, target, sequence: int):
    from cosmos_export.commit import CommitStore

    return [m for m in CommitStore(sandbox.s3, target).committed_manifests() if m.sequence > sequence]


def snapshot_counts(sandbox, target, manifest) -> Counter:
    import json

    from cosmos_export import jsonl

    counts: Counter = Counter()
    for part in manifest.parts:
        body = sandbox.s3.get_object(Bucket=target.bucket, Key=part.key)["Body"].read()
        counts.update(
            (d["id"], d.get("v"))
            for d in map(json.loads, jsonl.decompress(body, jsonl.compression_of_key(part.key)).splitlines())
        )
    return counts


def test_query_snapshot_killed_anywhere_is_redone_whole_and_exact(sandbox):
    """A query snapshot keeps no position inside a feed range: a killed run is redone from the start by the
    rerun, and every committed query snapshot holds each document exactly once; the incremental after it
    continues from the change feed's "now" taken before the query, so nothing is lost or repeated."""
    rng = random.Random(env_int("RELIABILITY_SEED", 20261123) + 1)
    container, prefix = "orders", sandbox.new_prefix()
    target = sandbox.target(prefix, container)
    sandbox.seed(container, make_docs(SEED_DOCS, tag="q"))
    query = {"EXPORT_SNAPSHOT_SOURCE": "query"}
    trials = max(3, TRIALS // 3)
    duration, outcomes, sequence, snapshots = 4.0, Counter(), 0, 0
    for trial in range(trials):
        sandbox.seed(container, make_docs(100, tag="q", version=trial + 2, offset=rng.randrange(SEED_DOCS - 100)))
        expected = current_versions(sandbox, container)
        sig = signal.SIGTERM if trial % 2 else signal.SIGKILL
        process = sandbox.start(prefix, container, "snapshot", **query)
        time.sleep(rng.uniform(0.3, duration))
        stopped = None
        if process.poll() is None:
            took = sandbox.stop(process, sig)
            stopped = sandbox.finish(process)
            if sig == signal.SIGTERM:
                assert took < ECS_STOP_TIMEOUT and stopped.code in (0, 143, -signal.SIGTERM), stopped.stderr[-2000:]
        outcome = "finished-before-signal" if stopped is None or stopped.code == 0 else signal.Signals(sig).name
        killed_commits = len(manifests_after(sandbox, target, sequence))
        outcomes[
            f"{outcome}:{'after-commit' if killed_commits and outcome != 'finished-before-signal' else 'before-commit'}"
        ] += 1
        rerun = sandbox.run(prefix, container, "snapshot", **query)
        assert rerun.code == 0, rerun.stderr[-3000:]
        duration = max(1.0, rerun.seconds)
        new = manifests_after(sandbox, target, sequence)
        assert 1 <= len(new) <= 2 and all(m.mode == "query-snapshot" for m in new)
        for manifest in new:  # whatever the kill interrupted, each committed snapshot is the whole container once
            assert snapshot_counts(sandbox, target, manifest) == expected, manifest.run_id
        snapshots += len(new)
        sequence = new[-1].sequence
    # The incremental continues from the last snapshot's "now": exactly the changes made since.
    changes = make_docs(150, tag="q", version=99, offset=rng.randrange(SEED_DOCS - 150))
    sandbox.seed(container, changes)
    done = sandbox.run(prefix, container, "incremental", **{"EXPORT_SNAPSHOT_SOURCE": "changefeed"})
    assert done.code == 0, done.stderr[-3000:]
    (last,) = manifests_after(sandbox, target, sequence)
    assert last.mode == "incremental" and snapshot_counts(sandbox, target, last) == versions(changes)
    got = committed(sandbox.s3, target)  # every manifest verifies
    record(
        "Process: query snapshot killed (SIGKILL/SIGTERM) at random points, each followed by a rerun, then "
        "an incremental",
        trials=trials,
        documents=len(got.docs),
        outcome=(
            f"each of the {snapshots} committed query snapshots holds every document exactly once; the "
            f"incremental holds exactly the later changes; {dict(sorted(outcomes.items()))}"
        ),
    )


def test_sigterm_during_a_slow_page_stops_after_that_page_and_the_rerun_is_exact(sandbox):
    """SIGTERM is honoured between pages: a page held up by 429s is finished first, then the run stops (143)
    with nothing committed, well inside the ECS stop timeout; the rerun commits every document once."""
    container, prefix = "customers", sandbox.new_prefix()
    target = sandbox.target(prefix, container)
    state = sandbox.faults()
    sandbox.seed(container, make_docs(1500, tag="term"))
    before_429 = state.stats_dict().get("query", {}).get("429", 0)
    expected = current_versions(sandbox, container)
    assert sum(expected.values()) >= 1500
    # 6 throttles of 700 ms on the query path: the SDK waits them out inside one page request.
    state.throttle_next(6, retry_after_ms=700, operation="query")
    process = sandbox.start(prefix, container, "snapshot", EXPORT_SNAPSHOT_SOURCE="query")
    deadline = time.monotonic() + 60
    while state.stats_dict().get("query", {}).get("429", 0) == before_429:
        assert process.poll() is None and time.monotonic() < deadline, "the worker never reached a throttled page"
        time.sleep(0.01)
    took = sandbox.stop(process, signal.SIGTERM)  # mid-page: the SDK is waiting out a retry-after
    stopped = sandbox.finish(process)
    state.clear_faults()
    assert stopped.code == 143, stopped.stderr[-2000:]
    assert "SIGTERM received" in stopped.last_line and "nothing was committed" in stopped.last_line
    assert took < ECS_STOP_TIMEOUT
    assert manifests_after(sandbox, target, 0) == []
    rerun = sandbox.run(prefix, container, "snapshot", EXPORT_SNAPSHOT_SOURCE="query")
    assert rerun.code == 0, rerun.stderr[-3000:]
    (manifest,) = manifests_after(sandbox, target, 0)
    assert snapshot_counts(sandbox, target, manifest) == expected
    record(
        "Process: SIGTERM while a query page is held up by 429s (6 x 700 ms retry-after)",
        trials=1,
        documents=sum(expected.values()),
        outcome=f"page finished, then exit 143 after {took:.1f}s (stop timeout {ECS_STOP_TIMEOUT:.0f}s), nothing "
        f"committed; rerun committed every document once",
    )
