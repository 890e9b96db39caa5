"""`.venv/bin/python -m bench.fanout [--docs 100000] [--shards 1 2 4] [--latency-ms 20]` (in `make bench`).

The fan-out benchmark: the sandbox (gateway double with auth, STS/Entra doubles, moto, the dev stack's
settings, 4 feed ranges) holds N ~1 KB documents; the gateway double adds a round-trip delay to every
response. For each shard count S: `cosmos-export plan --mode snapshot --shards S`, then S `cosmos-export run
--run ID --shard K/S` processes at once (what the Step Functions Map runs, one ECS task each), then
`cosmos-export commit --run ID`; every command is the contract's (`contract.fan_out_*_command`). Each
process's CPU seconds come from its own rusage (os.wait4). The committed run must list every seeded
document once (`cosmos-export parts`), or the benchmark fails. Results go to bench/results/fanout-<N>.json
and a "Fan-out" section of docs/performance.md; the README's 1 TB model is computed from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3

from bench import common
from cosmos_export import contract
from cosmos_export.contract import Env
from sandbox import serve as sb
from sandbox.seed import GatewaySeeder, sample_documents

SECTION_BEGIN = "<!-- fan-out benchmark: written by `.venv/bin/python -m bench.fanout` -->"
SECTION_END = "<!-- end of fan-out benchmark -->"
CONTAINER = "orders"


def worker(env: dict[str, str], argv: list[str], log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "cosmos-export"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cosmos_export.cli"]
    with open(log, "wb") as err:
        return subprocess.Popen(
            cmd + argv, cwd=common.REPO, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )


def wait(process: subprocess.Popen, log: Path) -> tuple[bytes, float]:
    """The child's stdout and CPU seconds; raises with its log's tail if it failed."""
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise RuntimeError(f"{log.stem} failed:\n  " + "\n  ".join(tail))
    return out, usage.ru_utime + usage.ru_stime


def one_run(state: dict, directory: Path, shards: int, seeded: int) -> dict:
    prefix = f"{state['prefix']}/bench-fanout-{shards}-{int(time.time())}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EXPORT_"))}
    # The sandbox's task-role session and settings only (no moto "testing" keys): the worker's own chain.
    env |= {"PYTHONPATH": str(common.REPO), **state["worker_env"], Env.PREFIX: prefix, Env.COSMOS_CONTAINERS: CONTAINER}
    execution = f"bench-{shards}"

    def step(argv: list[str], name: str) -> tuple[bytes, float, float]:
        log = directory / f"fanout-{shards}-{name}.log"
        started = time.perf_counter()
        out, cpu = wait(worker(env, argv, log), log)
        return out, cpu, time.perf_counter() - started

    _, plan_cpu, plan_s = step(contract.fan_out_plan_command("snapshot", shards, execution), "plan")
    creds = state["aws_cli_env"]
    s3 = boto3.client(
        "s3",
        endpoint_url=state["endpoints"]["s3"],
        region_name=state["region"],
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
    )
    body = s3.get_object(Bucket=state["bucket"], Key=contract.fan_out_plan_key(prefix, execution))["Body"].read()
    plan = json.loads(body)
    servers = {n: _cpu(pid) for n, pid in state["pids"].items()}
    logs = {k: directory / f"fanout-{shards}-shard-{k}.log" for k in plan["shards"]}
    started = time.perf_counter()
    processes = {k: worker(env, contract.fan_out_shard_command(plan["run_id"], k, shards), logs[k]) for k in logs}
    shard_cpu = {k: wait(p, logs[k])[1] for k, p in processes.items()}
    shards_s = time.perf_counter() - started
    servers = {n: round(_cpu(pid) - servers[n], 2) for n, pid in state["pids"].items()}
    _, commit_cpu, commit_s = step(contract.fan_out_commit_command(plan["run_id"]), "commit")
    out, _, _ = step(["parts", "--container", CONTAINER, "--format", "json"], "parts")
    listed = sum(p["documents"] for p in json.loads(out) if p["run_id"] == plan["run_id"])
    if listed != seeded:
        raise RuntimeError(f"{shards} shards: the committed run lists {listed} documents, {seeded} were seeded")
    return {
        "shards": shards,
        "planned_shards": len(plan["shards"]),
        "plan_seconds": round(plan_s, 2),
        "plan_cpu_seconds": round(plan_cpu, 2),
        "shards_seconds": round(shards_s, 2),
        "shard_cpu_seconds": {str(k): round(v, 2) for k, v in shard_cpu.items()},
        #: The doubles' and moto's CPU while the shards ran: on 2 vCPUs they share the machine with the shards.
        "server_cpu_seconds": servers,
        "commit_seconds": round(commit_s, 2),
        "commit_cpu_seconds": round(commit_cpu, 2),
        "docs_per_s": round(seeded / shards_s),
        "docs_per_s_end_to_end": round(seeded / (plan_s + shards_s + commit_s)),
        "load_1min_after": os.getloadavg()[0],
    }


def _cpu(pid: int) -> float:
    """utime + stime of a running process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(docs: int, shard_counts: list[int], latency_ms: float, directory: Path) -> dict:
    state = sb.up(directory, "dev", "gateway", timeout=180)
    try:
        seeder = GatewaySeeder(state["seed"]["control_url"], state["ca_bundle"])
        seeded = seeder.seed(state["database"], CONTAINER, sample_documents(docs))
        seeder.set_latency(latency_ms)
        runs = []
        for shards in shard_counts:
            result = one_run(state, directory, shards, seeded)
            print(
                f"{shards} shard(s) @{latency_ms:g} ms: {result['docs_per_s']:,} docs/s over the shards "
                f"({result['shards_seconds']:.1f}s), CPU per shard {result['shard_cpu_seconds']}, "
                f"plan {result['plan_seconds']:.1f}s, commit {result['commit_seconds']:.1f}s",
                flush=True,
            )
            runs.append(result)
        concurrency = state["worker_env"].get(Env.CONCURRENCY, "the worker default")
    finally:
        sb.down(directory)
    return {
        "docs": docs,
        "latency_ms": latency_ms,
        "concurrency_per_shard": concurrency,
        "runs": runs,
        "cpus": os.cpu_count(),
        "command": f".venv/bin/python -m bench.fanout --docs {docs} --shards {' '.join(map(str, shard_counts))} "
        f"--latency-ms {latency_ms:g}",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(result: dict) -> str:
    lines = [
        "## Fan-out",
        "",
        f"`{result['command']}` ({result['at']}): {result['docs']:,} documents, the gateway double adding "
        f"{result['latency_ms']:g} ms to every response, 4 feed ranges, EXPORT_CONCURRENCY "
        f"{result['concurrency_per_shard']} per shard; every shard is its own process on this 2-vCPU machine, "
        "next to the doubles and moto (their CPU while the shards ran: servers' CPU), so the machine, not "
        "Cosmos, bounds the larger counts. Each shard's CPU includes its start-up (Python, the SDKs, the "
        "identity chain), about what the whole `plan` process costs (plan CPU s). The commit includes refreshing the analytics tables (`currentState`, "
        "on by default), as a single task's run does.",
        "",
        "| shards | shards' wall s | docs/s | CPU s per shard | servers' CPU s | plan s | plan CPU s | commit s | docs/s end to end |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        cpu = ", ".join(f"{v:.1f}" for v in r["shard_cpu_seconds"].values())
        lines.append(
            f"| {r['shards']} | {r['shards_seconds']:.1f} | {r['docs_per_s']:,} | {cpu} | "
            f"{sum(r['server_cpu_seconds'].values()):.1f} | {r['plan_seconds']:.1f} | {r['plan_cpu_seconds']:.1f} "
            f"| {r['commit_seconds']:.1f} | {r['docs_per_s_end_to_end']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents in the container (default 100000)")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4], help="shard counts (default 1 2 4)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="round trip added per response (default 20)")
    parser.add_argument("--dir", type=Path, default=common.REPO / ".sandbox" / "bench-fanout")
    args = parser.parse_args()
    if args.docs < 1000:
        parser.error(f"--docs={args.docs}: use at least 1000 documents for meaningful rates")
    if any(s < 1 for s in args.shards):
        parser.error(f"--shards {args.shards}: every shard count must be at least 1")
    result = measure(args.docs, args.shards, args.latency_ms, args.dir.resolve())
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / f"fanout-{args.docs}.json").write_text(json.dumps(result, indent=2) + "\n")
    common.write_section(SECTION_BEGIN, SECTION_END, render(result))
    print(f"wrote {common.DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
