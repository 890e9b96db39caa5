"""The fan-out (plan, N shard processes, commit) through the whole identity chain, with random shards killed.

Every trial: change some documents, `cosmos-export plan`, start every shard as its own process (as the Step
Functions Map does), SIGKILL a random subset of them at random points, then `commit`: while a killed shard has
no result, commit must refuse, name that shard and write nothing. The killed shards are rerun (a Map retry),
commit succeeds, and a second commit exits 0 and commits nothing more. After all trials every seeded or
changed (id, version) is committed exactly once and every manifest verifies. RELIABILITY_FAN_OUT_TRIALS sets
the number of trials.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import time
import uuid
from collections import Counter

from cosmos_export import contract
from tests.reliability.harness import committed, env_int, make_docs, record, versions

TRIALS = env_int("RELIABILITY_FAN_OUT_TRIALS", 3)
SHARDS = 3  # over the container's 4 feed ranges: shards of 2, 1 and 1 ranges
SEED_DOCS = 1500
LATENCY_SECONDS = 0.005


def test_random_shards_killed_and_retried_commit_every_document_exactly_once(sandbox, monkeypatch):
    rng = random.Random(env_int("RELIABILITY_SEED", 20261203))
    # A container of its own (the other tests count every document of theirs), granted to the export
    # identity as the stack grants an exported container: a copy of its assignment on "orders".
    container, prefix = f"fan{uuid.uuid4().hex[:8]}", sandbox.new_prefix()
    state, database = sandbox.running.cosmos_state, sandbox.plan.cosmos_database
    state.create_container(database, container, "/pk", 4)
    granted = next(a for a in state.role_assignments if a.scope == f"/dbs/{database}/colls/orders")
    state.add_role_assignment(
        dataclasses.replace(granted, scope=f"/dbs/{database}/colls/{container}", created_at=granted.created_at)
    )
    target = sandbox.target(prefix, container)
    # A cross-cloud round trip on every Cosmos response, so the kills land mid-read.
    monkeypatch.setattr(state, "latency_seconds", LATENCY_SECONDS)  # restored after the test
    docs = make_docs(SEED_DOCS, tag="fan")
    sandbox.seed(container, docs)
    expected = versions(docs)
    duration = 4.0  # refined by each clean shard rerun
    outcomes: Counter = Counter()
    for trial in range(TRIALS):
        if trial:
            changed = set(rng.sample(range(SEED_DOCS), 200))
            batch = [{**d, "v": trial + 1} for d in make_docs(SEED_DOCS, tag="fan") if d["n"] in changed]
            batch += make_docs(30, tag="fan-new", version=trial + 1, offset=30 * trial)
            sandbox.seed(container, batch)
            expected += versions(batch)
        execution = f"trial-{trial}-{uuid.uuid4().hex[:6]}"
        planned = sandbox.run(prefix, container, args=contract.fan_out_plan_command("incremental", SHARDS, execution))
        assert planned.code == 0, planned.stderr[-2000:]
        plan_key = contract.fan_out_plan_key(prefix, execution)
        plan = json.loads(sandbox.s3.get_object(Bucket=sandbox.plan.bucket, Key=plan_key)["Body"].read())
        run_id, shards = plan["run_id"], plan["shards"]
        assert shards == list(range(1, SHARDS + 1)), plan

        def shard(k: int, tag: str = "shard", run_id: str = run_id):
            argv = contract.fan_out_shard_command(run_id, k, SHARDS)
            return sandbox.start(prefix, container, tag=f"{tag}-{k}", args=argv)

        processes = {k: shard(k) for k in shards}
        victims = rng.sample(shards, rng.randint(1, len(shards)))
        time.sleep(rng.uniform(0.1, duration * 1.1))
        for k in victims:
            if processes[k].poll() is None:
                sandbox.stop(processes[k], signal.SIGKILL)
        failed = []
        for k, process in processes.items():
            outcome = sandbox.finish(process)
            if outcome.code != 0:
                failed.append(k)
            outcomes["killed" if outcome.code != 0 else ("finished-before-kill" if k in victims else "clean")] += 1

        manifests_before = committed(sandbox.s3, target, check_verify=False).manifests
        commit_argv = contract.fan_out_commit_command(run_id)
        committed_early = False
        if failed:
            early = sandbox.run(prefix, container, args=commit_argv)
            if early.code == 0:
                # Every killed shard had stored its result before the kill reached it: a complete run.
                committed_early = True
                outcomes["killed-after-its-result"] += 1
            else:
                assert any(f"--shard {k}/{SHARDS}" in early.stderr for k in failed), early.last_line
                assert "nothing was written" in early.last_line, early.last_line
                assert committed(sandbox.s3, target, check_verify=False).manifests == manifests_before
                outcomes["commit-refused"] += 1
        if not committed_early:
            for k in failed:
                started = time.monotonic()
                rerun = sandbox.finish(shard(k, "retry"))
                assert rerun.code == 0, rerun.stderr[-2000:]
                duration = max(1.0, time.monotonic() - started)
            done = sandbox.run(prefix, container, args=commit_argv)
            assert done.code == 0, done.stderr[-3000:]
        assert committed(sandbox.s3, target, check_verify=False).manifests == manifests_before + 1
        again = sandbox.run(prefix, container, args=commit_argv)
        assert again.code == 0, again.stderr[-2000:]
        assert committed(sandbox.s3, target, check_verify=False).manifests == manifests_before + 1

    got = committed(sandbox.s3, target)
    counts = got.counts()
    missing = expected - counts
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not missing and not repeated and set(counts) == set(expected), (
        f"missing {sum(missing.values())}, repeated {len(repeated)}, unexpected {len(set(counts) - set(expected))}"
    )
    record(
        f"Fan-out: {SHARDS} shard processes per run, random shards SIGKILLed, then retried and committed",
        trials=TRIALS,
        documents=len(got.docs),
        outcome=(
            f"every (id, version) committed exactly once in {got.manifests} manifests; shard outcomes "
            f"{dict(sorted(outcomes.items()))}; commit refused while a shard had no result, wrote nothing"
        ),
    )
