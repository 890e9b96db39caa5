"""Smoke test: `python -m sandbox demo` end to end (real worker subprocess), and it leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sandbox.demo import DELETED, INSERTED, UPDATED

REPO = Path(__file__).resolve().parents[2]
DOCS = 600


def _demo(directory: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", "demo", "--dir", str(directory), "--docs", str(DOCS), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(300)
def test_demo_exports_snapshot_and_incremental_and_stops_everything(tmp_path):
    process = _demo(tmp_path)
    out, err = process.communicate(timeout=280)
    assert process.returncode == 0, f"demo failed:\n{out[-3000:]}\n{err[-3000:]}"
    assert out.rstrip().endswith("DEMO OK")
    summary = json.loads((tmp_path / "demo-summary.json").read_text())

    snapshot, incremental = summary["runs"]
    assert (snapshot["mode"], incremental["mode"]) == ("snapshot", "incremental")
    assert summary["seeded"] == {"orders": DOCS, "customers": 30}
    assert snapshot["containers"]["orders"]["documents"] == DOCS
    assert snapshot["containers"]["customers"]["documents"] == 30
    # LatestVersion change feed: updates and inserts, not deletes.
    assert summary["changed"] == {"updated": UPDATED, "inserted": INSERTED, "deleted": DELETED}
    assert incremental["containers"]["orders"]["documents"] == UPDATED + INSERTED
    assert incremental["containers"]["customers"]["documents"] == 0
    for run in (snapshot, incremental):
        for container, result in run["containers"].items():
            if result["documents"]:
                assert result["objects"] > 0 and result["bytes"] > 0, (container, result)
    assert len(summary["verified"]) == 4
    parts = [k for k in summary["keys"] if "/data/" in k]
    assert parts and all(k.startswith("cosmos/acme-orders-dev/orders/") for k in summary["keys"])
    assert [s["name"] for s in summary["steps"]][-2:] == [
        "verify both runs",
        "drill: restore into the scratch containers and compare",
    ]
    assert summary["change_feed_mode"] == "LatestVersion"

    # The drill, as the restore identity, into each exported container's scratch target.
    drills = summary["drills"]
    assert set(drills) == {"orders", "customers"}
    for container, target in (("orders", "orders-drill"), ("customers", "customers-drill")):
        d = drills[container]
        assert d["ok"] is True and d["definition_matches"] is True and d["documents_mismatched"] == 0
        assert d["target"] == {"database": "restore-drills", "container": target}
        assert d["sequence"] == 2 and d["key"].startswith(f"cosmos/acme-orders-dev/orders/{container}/drills/")
        assert d["key"] in summary["keys"]
    # LatestVersion: the 10 deleted orders are still in the restored state, and the summary says so.
    assert drills["orders"]["documents_expected"] == drills["orders"]["documents_found"] == DOCS + INSERTED
    assert drills["orders"]["unknown_delete_incrementals"] == 1
    assert summary["deletes"] == {
        "deleted": DELETED,
        "unseen": DELETED,
        "restored": DOCS + INSERTED,
        "source": DOCS + INSERTED - DELETED,
    }
    assert f"DELETES THE EXPORT COULD NOT SEE: {DELETED} of the {DELETED} documents deleted from orders" in out
    assert out.count("\ndrill: drill ") == 2
    # The demo ends with on-call's view: `cosmos-export status`, a row per container at sequence 2.
    table = out[out.index("cosmos-export status: acme-orders-dev/orders") :]
    rows = {c: next(line for line in table.splitlines() if line.startswith(f"│ {c} ")) for c in ("orders", "customers")}
    for container, row in rows.items():
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[1] == "2" and cells[4] == "incremental" and cells[9] == "current", row
        assert cells[5] == f"{incremental['containers'][container]['documents']:,}", row

    # Nothing it started survives: the serve process and moto.
    assert set(summary["pids"]) == {"serve", "moto"}
    time.sleep(0.5)
    assert [name for name, pid in summary["pids"].items() if _alive(pid)] == []
    assert not (tmp_path / "sandbox.json").exists()


@pytest.mark.timeout(300)
def test_demo_all_versions_exports_the_deletes_and_the_drill_restores_the_exact_source(tmp_path):
    process = _demo(tmp_path, "--all-versions")
    out, err = process.communicate(timeout=280)
    assert process.returncode == 0, f"demo failed:\n{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads((tmp_path / "demo-summary.json").read_text())
    assert summary["change_feed_mode"] == "AllVersionsAndDeletes"
    snapshot, incremental = summary["runs"]
    # AllVersionsAndDeletes: the incremental run carries the 10 deletes beside the updates and inserts.
    assert snapshot["containers"]["orders"]["documents"] == DOCS
    assert incremental["containers"]["orders"]["documents"] == UPDATED + INSERTED + DELETED
    orders = summary["drills"]["orders"]
    assert orders["ok"] is True and orders["documents_mismatched"] == 0
    assert orders["documents_expected"] == orders["documents_found"] == DOCS + INSERTED - DELETED
    assert orders["state_deletes_applied"] == DELETED and orders["unknown_delete_incrementals"] == 0
    assert summary["deletes"]["unseen"] == 0
    assert f"deletes the export could not see: 0 of the {DELETED} deleted from orders" in out
    time.sleep(0.5)
    assert [name for name, pid in summary["pids"].items() if _alive(pid)] == []


@pytest.mark.timeout(120)
def test_demo_interrupted_by_ctrl_c_stops_what_it_started(tmp_path):
    process = _demo(tmp_path)
    for line in process.stdout:
        if line.startswith("==> seed sample documents"):
            break
    else:
        pytest.fail(f"the demo never reached seeding: {process.stderr.read()[-2000:]}")
    started = psutil.Process(process.pid).children(recursive=True)
    assert started, "the demo started no process"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "demo interrupted: stopping what it started" in err
    time.sleep(0.5)
    assert [p.pid for p in started if _alive(p.pid)] == []


@pytest.mark.timeout(300)
def test_demo_on_cosmosdb_server_takes_two_query_snapshots(tmp_path):
    """`--cosmos vercel`: @vercel/cosmosdb-server has no change feed, so both runs are query snapshots."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "demo", "--cosmos", "vercel", "--docs", "100", "--dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = process.communicate(timeout=280)
    assert process.returncode == 0, f"demo failed:\n{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads((tmp_path / "demo-summary.json").read_text())
    assert summary["cosmos"] == "vercel"
    first, second = summary["runs"]
    assert (first["mode"], second["mode"]) == ("snapshot", "snapshot")
    assert first["containers"]["orders"]["documents"] == 100
    # The second snapshot sees the changes: inserts added, deletes gone, updates in place.
    assert second["containers"]["orders"]["documents"] == 100 + INSERTED - DELETED
    assert len(summary["verified"]) == 4
    assert not (tmp_path / "sandbox.json").exists()


@pytest.mark.timeout(200)
def test_demo_failure_names_the_reason_and_stops_what_it_started(tmp_path):
    """A worker that refuses its settings fails the demo: exit 1, the worker's own error shown, nothing left running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "demo", "--docs", "50", "--dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "EXPORT_PAGE_SIZE": "-5"},
    )
    out, err = process.communicate(timeout=180)
    assert process.returncode == 1, out[-2000:] + err[-2000:]
    assert "demo failed: DemoError: `cosmos-export doctor` exited with 2" in err  # its first worker step
    assert "EXPORT_PAGE_SIZE='-5'" in err
    assert "DEMO OK" not in out
    assert not (tmp_path / "sandbox.json").exists()
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []
