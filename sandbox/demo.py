"""`python -m sandbox demo` (`make demo`): the whole system, locally, in about a minute.

up -> seed the exported containers -> `cosmos-export run --mode snapshot` (the
real worker, a subprocess with the stack's task-definition environment) ->
update, insert and delete documents -> `run --mode incremental` -> `verify`
both runs -> `cosmos-export drill` per exported container (the restore task's
environment: its own identity, writing only the scratch targets) -> summary,
with how many deletes the export could not see -> down.

With `--all-versions` the account keeps every version (continuous backup) and
the stack runs changeFeedMode AllVersionsAndDeletes: the incremental run
carries the deletes and the drill's restored state has none of the deleted
documents. In LatestVersion mode it keeps them until the next full snapshot,
and the summary says how many. Everything started is stopped on success, on
failure and on Ctrl-C/SIGTERM. Exits non-zero with the reason on failure.

With `--cosmos vercel` the source is @vercel/cosmosdb-server, which has no
working change feed: both runs are query snapshots (the second one sees the
changes), never an incremental run that would pass while proving nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from cosmos_export import layout
from cosmos_export.commit import CommitStore
from sandbox import serve as sb
from sandbox.breaks import BREAKS
from sandbox.seed import GatewaySeeder, SdkSeeder, sample_documents

SUMMARY_FILE = "demo-summary.json"
UPDATED, INSERTED, DELETED = 40, 25, 10


class DemoError(RuntimeError):
    pass


@dataclass
class Step:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class Demo:
    directory: Path
    steps: list[Step] = field(default_factory=list)
    worker: subprocess.Popen | None = None

    def step(self, name: str, fn, *args: Any) -> Any:
        print(f"==> {name}", flush=True)
        started = time.monotonic()
        result = fn(*args)
        self.steps.append(Step(name, time.monotonic() - started))
        print(f"    done in {self.steps[-1].seconds:.1f}s", flush=True)
        return result

    def worker_cmd(self, state: dict, *args: str, identity: str = "worker_env") -> str:
        """Run the real worker CLI with the sandbox's worker (or `restore_env`) environment; returns its stdout.

        Its log (`worker-<command>.log`) holds what it printed: the JSON log lines and results on stdout,
        then stderr, whose last line is the reason when it fails.
        """
        exe = Path(sys.executable).parent / "cosmos-export"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "cosmos_export.cli"]
        log_path = self.directory / f"worker-{'-'.join(a.lstrip('-') for a in args[:3])}.log"
        env = {**os.environ, **state[identity], "PYTHONUNBUFFERED": "1"}
        self.worker = subprocess.Popen(
            argv + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        out, err = self.worker.communicate()
        log_path.write_bytes(out + err)
        code, self.worker = self.worker.returncode, None
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            raise DemoError(
                f"`cosmos-export {' '.join(args)}` exited with {code}:\n    "
                + "\n    ".join(tail)
                + f"\n  full log: {log_path}"
            )
        return out.decode(errors="replace")

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()


def _s3(state: dict) -> Any:
    creds = state["aws_cli_env"]
    return boto3.client(
        "s3",
        endpoint_url=state["endpoints"]["s3"],
        region_name=state["region"],
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds["AWS_SESSION_TOKEN"],
    )


def _target(state: dict, container: str) -> layout.ExportTarget:
    return layout.ExportTarget(state["bucket"], state["prefix"], state["cosmos_account"], state["database"], container)


def _customer(i: int) -> dict:
    return {
        "id": f"cust-{i:05d}",
        "customerId": f"cust-{i:05d}",
        "type": "customer",
        "name": f"Customer {i}",
        "email": f"c{i}@example.com",
        "since": f"20{10 + i % 14:02d}-0{1 + i % 9}-15",
        "address": {"city": ["Zürich", "Lyon", "Osaka"][i % 3], "country": ["CH", "FR", "JP"][i % 3]},
        "marketing": {"email": i % 2 == 0, "sms": None},
        "lifetimeValue": round(i * 13.37 % 5000, 2),
    }


def _seeder(state: dict) -> GatewaySeeder | SdkSeeder:
    """Writes documents into the running sandbox's Cosmos endpoint, whichever it is."""
    if state["cosmos"] == "gateway":
        return GatewaySeeder(state["seed"]["control_url"], state["ca_bundle"])
    return SdkSeeder(state["seed"]["cosmos_endpoint"])


def seed(state: dict, docs: int) -> dict[str, int]:
    db, containers = state["database"], state["containers"]
    seeder = _seeder(state)
    counts = {containers[0]: seeder.seed(db, containers[0], sample_documents(docs))}
    for other in containers[1:]:
        counts[other] = seeder.seed(db, other, (_customer(i) for i in range(max(10, docs // 20))))
    return counts


def change(state: dict, docs: int) -> dict[str, int]:
    """Update, insert and delete documents of the first container; returns what changed."""
    db, container = state["database"], state["containers"][0]
    seeder = _seeder(state)
    originals = list(sample_documents(UPDATED + DELETED))
    for doc in originals[:UPDATED]:
        doc["revision"] += 1
        doc["status"] = "returned"
        doc["returnReason"] = {"code": "R2", "note": "arrived damaged — replaced"}
        seeder.upsert(db, container, doc)
    # A second `change` finds them gone: it counts what it deleted, it does not fail.
    deleted = sum(seeder.delete(db, container, doc["id"], doc["customerId"]) for doc in originals[UPDATED:])
    for doc in sample_documents(INSERTED, start=docs):
        seeder.upsert(db, container, doc)
    return {"updated": UPDATED, "inserted": INSERTED, "deleted": deleted}


def committed(state: dict) -> dict[str, list]:
    s3 = _s3(state)
    return {c: CommitStore(s3, _target(state, c)).committed_manifests() for c in state["containers"]}


def doctor(demo: Demo, state: dict) -> str:
    """`cosmos-export doctor`: every link of the chain of trust, before anything is exported."""
    return demo.worker_cmd(state, "doctor")


def run_worker(demo: Demo, state: dict, mode: str) -> dict[str, Any]:
    """One worker run; returns, per container, the manifest it committed."""
    before = {c: len(m) for c, m in committed(state).items()}
    demo.worker_cmd(state, "run", "--mode", mode)
    after = committed(state)
    out = {}
    for container, manifests in after.items():
        if len(manifests) != before[container] + 1:
            raise DemoError(
                f"the {mode} run exited 0 but committed {len(manifests) - before[container]} "
                f"manifest(s) for {container} instead of 1"
            )
        out[container] = manifests[-1]
    return out


def verify(demo: Demo, state: dict, runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for run in runs:
        for container, manifest in run.items():
            out = demo.worker_cmd(state, "verify", "--run", manifest.run_id, "--container", container)
            lines.append(f"{container} {manifest.run_id}: {out.strip().splitlines()[-1] if out.strip() else 'ok'}")
    return lines


def status_table(state: dict) -> str:
    """`cosmos-export status`'s per-container table for the sandbox's bucket (read-only)."""
    import io

    from rich.console import Console

    from cosmos_export import status

    statuses = status.collect(
        _s3(state),
        bucket=state["bucket"],
        prefix=state["prefix"],
        account=state["cosmos_account"],
        database=state["database"],
        containers=state["containers"],
    )
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(status.table(statuses))
    return console.export_text()


def drill(demo: Demo, state: dict) -> dict[str, dict[str, Any]]:
    """`cosmos-export drill -c <container>` as the restore identity, for every exported container; the reports."""
    if not state.get("restore_env"):
        raise DemoError(f"stack {state['stack']!r} declares no restore identity: set restore.enabled in its stack file")
    s3, reports = _s3(state), {}
    for container in state["containers"]:
        out = demo.worker_cmd(state, "drill", "-c", container, identity="restore_env").strip()
        line = out.splitlines()[-1] if out else ""
        key = line.rsplit(f"s3://{state['bucket']}/", 1)[-1] if f"s3://{state['bucket']}/" in line else None
        if key is None:
            raise DemoError(f"`cosmos-export drill -c {container}` printed no report location: {line!r}")
        report = json.loads(s3.get_object(Bucket=state["bucket"], Key=key)["Body"].read())
        reports[container] = {"line": line, "key": key, "report": report}
    return reports


def unseen_deletes(
    state: dict, seeded: dict[str, int], changed: dict[str, int], drills: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """Deleted documents still in the restored state: what the export could not see (LatestVersion mode).

    The source's true count is known (seeded + inserted - deleted); the drill's expected count is what the
    export's committed state holds.
    """
    first = state["containers"][0]
    source_now = seeded[first] + changed["inserted"] - changed["deleted"]
    restored = drills[first]["report"]["documents_expected"]
    return {"deleted": changed["deleted"], "unseen": restored - source_now, "restored": restored, "source": source_now}


def _keys(state: dict) -> list[str]:
    s3, keys = _s3(state), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=state["bucket"], Prefix=state["prefix"] + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def summarize(
    demo: Demo,
    state: dict,
    seeded: dict[str, int],
    changed: dict[str, int],
    runs: list[tuple[str, dict[str, Any]]],
    verified: list[str],
    drills: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    deletes = unseen_deletes(state, seeded, changed, drills) if drills else None
    summary = {
        "ok": True,
        "stack": state["stack"],
        "cosmos": state["cosmos"],
        "change_feed_mode": state["worker_env"].get("EXPORT_CHANGE_FEED_MODE"),
        "seeded": seeded,
        "changed": changed,
        "runs": [
            {
                "mode": mode,
                "containers": {
                    c: {
                        "run_id": m.run_id,
                        "sequence": m.sequence,
                        "documents": m.documents,
                        "bytes": m.bytes,
                        "objects": len(m.parts),
                    }
                    for c, m in run.items()
                },
            }
            for mode, run in runs
        ],
        "verified": verified,
        "drills": {
            c: {
                "key": d["key"],
                **{
                    k: d["report"].get(k)
                    for k in (
                        "ok",
                        "sequence",
                        "target",
                        "documents_expected",
                        "documents_found",
                        "documents_mismatched",
                        "deletes_applied",
                        "state_deletes_applied",
                        "unknown_delete_incrementals",
                        "definition_matches",
                        "restore_seconds",
                        "verify_seconds",
                        "request_charge",
                    )
                },
            }
            for c, d in (drills or {}).items()
        },
        "deletes": deletes,
        "steps": [{"name": s.name, "seconds": round(s.seconds, 2)} for s in demo.steps],
        "keys": _keys(state),
        "pids": state["pids"],  # what the sandbox started (all stopped when the demo returns)
    }
    (demo.directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print("\n=== Demo summary ===")
    print(f"stack {state['stack']}, Cosmos {state['cosmos']}, bucket s3://{state['bucket']}/{state['prefix']}/")
    print(
        f"seeded: {', '.join(f'{c}={n}' for c, n in seeded.items())};  changed {state['containers'][0]}: "
        f"{changed['updated']} updated, {changed['inserted']} inserted, {changed['deleted']} deleted"
    )
    print(f"{'run':<12} {'container':<10} {'run id':<26} {'docs':>6} {'bytes':>9} {'objects':>7}")
    for run in summary["runs"]:
        for container, r in run["containers"].items():
            print(
                f"{run['mode']:<12} {container:<10} {r['run_id']:<26} {r['documents']:>6} {r['bytes']:>9} "
                f"{r['objects']:>7}"
            )
    print("verify: " + "; ".join(verified))
    for d in (drills or {}).values():
        print(f"drill: {d['line']}")
    if deletes is not None:
        first = state["containers"][0]
        if deletes["unseen"] > 0:
            print(
                f"DELETES THE EXPORT COULD NOT SEE: {deletes['unseen']} of the {deletes['deleted']} documents deleted "
                f"from {first} (changeFeedMode {summary['change_feed_mode']} carries no deletes): the restored state "
                f"holds {deletes['restored']} documents, the source {deletes['source']}. They stay until the next full "
                "snapshot (snapshotSchedule), or use changeFeedMode AllVersionsAndDeletes (`demo --all-versions`)."
            )
        else:
            print(
                f"deletes the export could not see: 0 of the {deletes['deleted']} deleted from {first}: the restored "
                f"state holds {deletes['restored']} documents, exactly the source's {deletes['source']}."
            )
    print("steps: " + ", ".join(f"{s.name} {s.seconds:.1f}s" for s in demo.steps))
    print(f"S3 keys ({len(summary['keys'])}):")
    for key in summary["keys"]:
        print(f"  {key}")
    print("\n" + demo.worker_cmd(state, "status").rstrip())  # on-call's view of the same bucket
    py, worker = sb.command("python"), sb.command("cosmos-export")
    print(f"\nNext: `{py} -m sandbox up` keeps the services running (state in .sandbox/sandbox.json);")
    print(f'      `eval "$({py} -m sandbox env)" && {worker} doctor` walks the chain step by step;')
    print(f"      `{py} -m sandbox demo --break fic-subject` shows a broken stack failing here as in Azure.")
    print(f"      Full summary: {demo.directory / SUMMARY_FILE}; worker logs: {demo.directory}/worker-*.log")
    print("DEMO OK")
    return summary


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(
    *,
    stack: str = "dev",
    cosmos: str = "gateway",
    docs: int = 2000,
    directory: Path = Path(".sandbox/demo"),
    all_versions: bool = False,
    broken: str | None = None,
) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUMMARY_FILE).unlink(missing_ok=True)
    demo = Demo(directory)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C stops what the demo started even when it was launched with SIGINT ignored (a shell's `cmd &`
    # without job control passes SIG_IGN on, and Python then installs no handler of its own).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    if cosmos == "vercel":
        docs = min(docs, 1000)  # its query cost grows with the square of the container size
    try:
        state = demo.step(
            f"start sandbox (stack {stack}, Cosmos {cosmos}{', AllVersionsAndDeletes' if all_versions else ''}"
            f"{f', broken on purpose: {broken}' if broken else ''})",
            lambda: sb.up(directory, stack, cosmos, all_versions=all_versions, broken=broken),  # type: ignore[arg-type]
        )
        seeded = demo.step("seed sample documents", seed, state, docs)
        demo.step("doctor: walk the chain of trust", doctor, demo, state)
        second = "snapshot" if cosmos == "vercel" else "incremental"
        first_run = demo.step("export: snapshot", run_worker, demo, state, "snapshot")
        changed = demo.step("change documents", change, state, docs)
        second_run = demo.step(f"export: {second}", run_worker, demo, state, second)
        verified = demo.step("verify both runs", verify, demo, state, [first_run, second_run])
        # A drill reads the target back through its change feed: the vercel server's is a stub.
        drills = (
            demo.step("drill: restore into the scratch containers and compare", drill, demo, state)
            if state.get("restore_env") and cosmos == "gateway"
            else None
        )
        summarize(demo, state, seeded, changed, [("snapshot", first_run), (second, second_run)], verified, drills)
        if broken:
            print(
                f"\n--break {broken} did not fail the demo: the sandbox missed {BREAKS[broken].what}", file=sys.stderr
            )
            return 1
        return 0
    except KeyboardInterrupt:
        print("\ndemo interrupted: stopping what it started", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if broken:
            print(
                f"\nThe stack was broken on purpose (--break {broken}): {BREAKS[broken].what}. The cloud answers "
                f"the same: {BREAKS[broken].expect}; the doctor's FAIL line above says what to fix. "
                "Without --break the demo passes.",
                file=sys.stderr,
            )
        return 1
    finally:
        # Ctrl-C while cleaning up must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        demo.stop_worker()
        sb.down(directory)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
