"""`cosmos-export restore|drill` as ECS runs them: separate processes through STS -> Entra -> Cosmos double -> moto.

A restore is SIGKILLed at random points and rerun: the target ends exact, every run starts where the last
checkpoint was, and no more than one batch per kill is ever upserted twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosmos_export import contract
from sandbox.doubles.cosmos.rbac import RoleAssignment
from tests.runtime.trust_chain import SP_OBJECT_ID

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")
BATCH = 100
DOCS = 800


def cli(args, env, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cosmos_export", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        **kw,
    )


def start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "cosmos_export", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def user(doc):
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def docs_of(state, db, container):
    return {(d["pk"], d["id"]): user(d) for d in state.container(db, container).iter_documents()}


@pytest.fixture()
def restore_env(chain):
    cosmos = chain.cosmos
    cosmos.create_container("restore", "orders-restore", feed_ranges=2)
    cosmos.create_container("restore", "orders-scratch", feed_ranges=2)
    # The same Entra app here for brevity; the restore role itself is assigned only on the targets.
    for target in ("orders-restore", "orders-scratch"):
        cosmos.add_role_assignment(
            RoleAssignment(SP_OBJECT_ID, f"/dbs/restore/colls/{target}", contract.COSMOS_RESTORE_DATA_ACTIONS)
        )
    cosmos.upsert_many(
        "shop", "orders", [{"id": f"d{i}", "pk": f"k{i % 37}", "v": i, "big": 2**70 + i} for i in range(DOCS)]
    )
    env = {
        **os.environ,
        **chain.env(),
        contract.Env.PREFIX: "exports",
        contract.Env.PAGE_SIZE: "200",
        contract.Env.LOG_LEVEL: "INFO",
        contract.Env.CONCURRENCY: "2",
        contract.Env.RESTORE_BATCH_DOCUMENTS: str(BATCH),
        contract.Env.RESTORE_TARGET_DATABASE: "restore",
        contract.Env.RESTORE_TARGETS: "orders=orders-scratch",
    }
    exported = cli(["run", "--mode", "snapshot"], env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    return chain, env


def progress(chain, restore_id):
    from boto3 import Session  # noqa: F401

    s3 = chain.session.client("s3", endpoint_url=chain.urls["s3"])
    key = f"exports/acct/shop/orders/{contract.RESTORES_DIR}/{restore_id}/progress.json"
    return json.loads(s3.get_object(Bucket=chain.bucket, Key=key)["Body"].read())


def upserts(cosmos):
    """Documents upserted, by point writes or inside transactional batches."""
    return sum(n for (op, status), n in cosmos.stats.items() if op in ("item.upsert", "batch.upsert") and status < 300)


def test_sigkill_at_random_points_then_rerun_leaves_the_target_exact_and_redoes_at_most_a_batch(restore_env):
    chain, env = restore_env
    cosmos = chain.cosmos
    rng = random.Random(20261202)
    # Transactional batches make 800 documents a fraction of a second: slow the double's writes (~1 s per
    # checkpoint of 100 here) so that three runs of at most two checkpoints each are killed mid-restore.
    cosmos.response_delay.update({"item.batch": 0.05, "item.upsert": 0.05})
    args = ["restore", "-c", "orders", "--target-container", "orders-restore"]
    from cosmos_export.restore import restore_id

    rid = restore_id("acct", "shop", "orders", 1, "restore", "orders-restore")
    checkpoints = []
    kills = 0
    for _trial in range(3):
        process = start(args, env)
        # Wait for a random number of committed batches (1 or 2 more), then kill it hard somewhere after.
        wanted = rng.randint(0, 1)
        seen = 0
        for line in process.stdout:
            if '"restore_batch"' in line:
                seen += 1
                if seen > wanted:
                    break
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=60)
        checkpoints.append(progress(chain, rid)["documents_committed"])
    final = cli(args, env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert docs_of(cosmos, "restore", "orders-restore") == docs_of(cosmos, "shop", "orders")
    done = progress(chain, rid)
    assert done["status"] == "complete" and done["documents_committed"] == DOCS
    # Every run started exactly at the previous run's last checkpoint: nothing committed was redone.
    assert done["runs_started_at"] == [0, *checkpoints]
    assert kills >= 2 and upserts(cosmos) <= DOCS + kills * BATCH
    assert cosmos.stats[("item.batch", 200)] > 0  # written as transactional batches
    assert f"resumed at {checkpoints[-1]}" in final.stdout


def test_refusal_exits_2_and_writes_nothing(restore_env):
    chain, env = restore_env
    result = cli(["restore", "-c", "orders", "--target-container", "missing"], env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "error: refused, nothing was written: target container restore/missing does not exist"
    )
    result = cli(["restore", "-c", "orders", "--target-database", "shop", "--target-container", "orders"], env)
    assert result.returncode == 2 and "--allow-source-target" in result.stderr.splitlines()[-1]
    s3 = chain.session.client("s3", endpoint_url=chain.urls["s3"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=chain.bucket, Prefix="exports/").get("Contents", [])]
    assert not [k for k in keys if "/restores/" in k]
    assert upserts(chain.cosmos) == 0


def test_drill_exits_0_with_a_report_then_1_on_a_definition_mismatch(restore_env):
    chain, env = restore_env
    ok = cli(["drill", "-c", "orders"], env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    events = [json.loads(line) for line in ok.stdout.splitlines() if line.startswith("{")]
    done = [e for e in events if e.get("event") == "drill_done"]
    assert len(done) == 1 and done[0]["ok"] is True and done[0]["documents_found"] == DOCS
    assert "eyJ" not in ok.stdout + ok.stderr
    chain.cosmos.container("restore", "orders-scratch").properties["defaultTtl"] = 60
    bad = cli(["drill", "-c", "orders"], env)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1] == "error: drill of orders failed: defaultTtl: source null, target 60"


def test_as_of_without_a_time_zone_is_refused_before_anything(chain):
    env = {**os.environ, **chain.env(), contract.Env.PREFIX: "exports"}
    result = cli(
        ["restore", "-c", "orders", "--target-container", "orders-restore", "--as-of", "2026-12-01T06:00:00"], env
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: --as-of='2026-12-01T06:00:00' has no time zone; add one, e.g. 2026-12-01T06:00:00Z for UTC"
    )
    assert not chain.cosmos.stats  # not one request reached Cosmos
