"""The `cosmos-export` command as ECS runs it: a separate process configured only by environment variables,
through the whole chain of doubles (STS -> Entra -> Cosmos gateway) into moto S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cosmos_export import contract
from cosmos_export.commit import CommitStore
from cosmos_export.layout import ExportTarget


def cli(args, env, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cosmos_export", *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )


@pytest.fixture()
def worker_env(chain):
    env = {**os.environ, **chain.env(), contract.Env.PREFIX: "exports", contract.Env.PAGE_SIZE: "50"}
    return env


def test_invalid_settings_exit_2_with_the_reason_last(worker_env):
    env = {**worker_env, contract.Env.CONCURRENCY: "0"}
    result = cli(["run", "--mode", "snapshot"], env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: invalid setting: EXPORT_CONCURRENCY='0': input should be greater than or equal to 1; use 1..64"
    )


def test_a_bad_ru_budget_flag_exits_2_naming_it(worker_env):
    result = cli(["run", "--mode", "snapshot", "--max-ru-per-second", "0"], worker_env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "error: invalid setting: EXPORT_MAX_RU_PER_SECOND='0.0': input should be greater than 0; use a positive number"
    )


def test_laptop_mode_is_refused_inside_ecs(worker_env):
    env = {
        **worker_env,
        contract.Env.IDENTITY_MODE: "laptop",
        "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x",
    }
    result = cli(["doctor"], env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: invalid setting: EXPORT_IDENTITY_MODE='laptop': refused inside ECS (ECS_CONTAINER_METADATA_URI_V4 "
        "is set): a task must use its own role; set EXPORT_IDENTITY_MODE=workload"
    )


def test_run_then_verify_through_the_full_chain(chain, worker_env):
    chain.cosmos.upsert_many("shop", "orders", [{"id": f"d{i}", "pk": f"k{i % 31}", "v": i} for i in range(400)])
    result = cli(["run", "--mode", "snapshot"], worker_env)
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = next(e for e in events if e["event"] == "export_done")
    assert done["documents"] == 400
    assert len(chain.sts.issued) >= 1  # the AWS token really was exchanged at Entra
    assert "eyJ" not in result.stdout + result.stderr
    run_id = done["runs"]["orders"]

    verified = cli(["verify", "--run", run_id], worker_env)
    assert verified.returncode == 0, verified.stderr
    assert f"orders: run {run_id} sequence 1: " in verified.stdout and "400 document(s)" in verified.stdout
    missing = cli(["verify", "--run", "20000101T000000Z-deadbeef"], worker_env)
    assert missing.returncode == 1 and "is not committed" in missing.stderr.splitlines()[-1]


def test_sigterm_stops_without_committing(chain, worker_env):
    chain.cosmos.upsert_many("shop", "orders", [{"id": f"d{i}", "pk": f"k{i % 97}", "v": i} for i in range(6000)])
    env = {**worker_env, contract.Env.PAGE_SIZE: "5", contract.Env.CONCURRENCY: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosmos_export", "run", "--mode", "snapshot"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # wait until pages are being exported
            if '"cosmos_page"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - began < 10  # well inside ECS's 30 s stop timeout
    assert proc.returncode == 143
    assert stderr.splitlines()[-1].startswith("error: SIGTERM received: orders: stopped before commit (run ")
    assert "nothing was committed" in stderr.splitlines()[-1]
    target = ExportTarget(chain.bucket, "exports", "acct", "shop", "orders")
    assert CommitStore(chain.session.client("s3", endpoint_url=chain.urls["s3"]), target).load().checkpoint is None
