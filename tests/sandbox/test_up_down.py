"""`python -m sandbox up | seed | env | change | down`: the exploration path the README and `up` print."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest

from sandbox.demo import INSERTED, UPDATED

REPO = Path(__file__).resolve().parents[2]
DOCS = 300


def _sandbox(directory: Path, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def _exports(printed: str) -> dict[str, str]:
    """Parse the `export K=V` lines `sandbox env` prints, the way a shell's eval would."""
    values = {}
    for line in printed.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values


def _worker(mode: str, env: dict[str, str]) -> dict:
    cli = Path(sys.executable).with_name("cosmos-export")
    proc = subprocess.run(
        [str(cli), "run", "--mode", mode],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("{")]
    return {line["container"]: line["documents"] for line in lines if line.get("event") == "container_committed"}


@pytest.mark.timeout(400)
def test_up_seed_run_change_run_down(tmp_path):
    up = _sandbox(tmp_path, "up")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert f".venv/bin/python -m sandbox seed --dir {tmp_path}" in up.stdout
        state = json.loads((tmp_path / "sandbox.json").read_text())
        assert set(state["endpoints"]) >= {"s3", "sts", "entra", "cosmos"}
        assert all(url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")) for url in state["endpoints"].values())

        seeded = _sandbox(tmp_path, "seed", "--docs", str(DOCS))
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        assert seeded.stdout.startswith(f"seeded: orders={DOCS}, customers=")

        worker_env = _exports(_sandbox(tmp_path, "env").stdout)
        assert worker_env["EXPORT_BUCKET"] == state["bucket"]
        snapshot = _worker("snapshot", worker_env)
        assert snapshot["orders"] == DOCS

        changed = _sandbox(tmp_path, "change", "--docs", str(DOCS))
        assert changed.returncode == 0, changed.stderr[-3000:]
        assert _worker("incremental", worker_env) == {"orders": UPDATED + INSERTED, "customers": 0}

        # The AWS CLI environment reaches the same bucket (what `up` tells the user to run).
        aws = _exports(_sandbox(tmp_path, "env", "--aws").stdout)
        s3 = boto3.client(
            "s3",
            endpoint_url=state["endpoints"]["s3"],
            region_name=aws["AWS_DEFAULT_REGION"],
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=aws.get("AWS_SESSION_TOKEN"),
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=state["bucket"])["Contents"]]
        assert sum("/orders/manifests/" in key for key in keys) == 2

        # `sandbox status`: the endpoints, then cosmos-export status's table for the sandbox's bucket.
        shown = _sandbox(tmp_path, "status")
        assert shown.returncode == 0, shown.stderr[-3000:]
        table = shown.stdout[shown.stdout.index("cosmos-export status: acme-orders-dev/orders") :]
        rows = {
            c: [
                x.strip()
                for x in next(line for line in table.splitlines() if line.startswith(f"│ {c} ")).strip("│ ").split("│")
            ]
            for c in ("orders", "customers")
        }
        assert [(r[1], r[4], r[5], r[9]) for r in rows.values()] == [
            ("2", "incremental", str(UPDATED + INSERTED), "current"),
            ("2", "incremental", "0", "current"),
        ]
        # `env --restore`: the restore task's environment, its own session and Entra app, same endpoints.
        restore_env = _exports(_sandbox(tmp_path, "env", "--restore").stdout)
        assert restore_env == state["restore_env"]
        assert restore_env["EXPORT_RESTORE_TARGETS"] == "orders=orders-drill,customers=customers-drill"
        assert restore_env["EXPORT_RESTORE_TARGET_DATABASE"] == "restore-drills"
        assert restore_env["EXPORT_AZURE_CLIENT_ID"] != worker_env["EXPORT_AZURE_CLIENT_ID"]
        assert restore_env["AWS_ACCESS_KEY_ID"] != worker_env["AWS_ACCESS_KEY_ID"]
        assert {k: restore_env[k] for k in ("EXPORT_COSMOS_ENDPOINT", "EXPORT_S3_ENDPOINT", "EXPORT_STS_ENDPOINT")} == {
            k: worker_env[k] for k in ("EXPORT_COSMOS_ENDPOINT", "EXPORT_S3_ENDPOINT", "EXPORT_STS_ENDPOINT")
        }
        assert f'eval "$(.venv/bin/python -m sandbox env --dir {tmp_path} --restore)"' in up.stdout
        assert _sandbox(tmp_path, "env", "--restore", "--aws").returncode == 2
    finally:
        down = _sandbox(tmp_path, "down")
    assert down.returncode == 0 and down.stdout.startswith("stopped ")
    time.sleep(0.5)
    survivors = [
        pid
        for pid in state["pids"].values()
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert survivors == []
    assert _sandbox(tmp_path, "status").returncode == 1


def test_all_versions_needs_the_gateway_double(tmp_path):
    result = _sandbox(tmp_path, "up", "--all-versions", "--cosmos", "vercel")
    assert result.returncode == 2
    assert "--all-versions needs --cosmos gateway: @vercel/cosmosdb-server has no change feed" in result.stderr
    assert not (tmp_path / "sandbox.json").exists()


def test_commands_need_a_running_sandbox(tmp_path):
    for command in (["env"], ["seed"], ["change"]):
        result = _sandbox(tmp_path, *command)
        assert result.returncode == 1
        assert f"no sandbox is running from {tmp_path}: run `.venv/bin/python -m sandbox up` first" in result.stderr
