"""`.venv/bin/python -m bench [--docs 100000 [1000000 ...]] [--profile]` (`make bench`: both sizes): the export benchmark.

Starts the sandbox (gateway double with auth, STS/Entra doubles, moto) in its
own processes, bulk-loads N ~1 KB documents through the double's
`/_double/seed` path, then runs, one after the other and each in its own
process: (a) floor: drain every feed range's change feed with the SDK,
discarding documents; (b) the worker's snapshot export to moto S3; (c) a naive
export (read_all_items, json.dumps per document, one put_object). CPU seconds
and peak RSS are the client process's own (os.wait4 rusage), never the
servers'; the servers' CPU during each client (gateway double + STS/Entra
process, moto) is recorded next to it, to see whether they cap the rates.
A fourth, diagnostic client `floor_tuned` is the floor read the way the
worker reads (its garbage-collector setting, export.bulk_gc, and its SDK
response parser, sdk_json), so the worker's own added cost can be told apart
from the reading work it saves. Results go to
bench/results/<N>.json and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sandbox import serve as sb
from sandbox.seed import GatewaySeeder, sample_documents

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
CONTAINER = "orders"
CLIENT_NAMES = ("floor", "floor_tuned", "worker", "naive")
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_client(
    name: str, state_file: Path, log_dir: Path, profile: Path | None = None, concurrency: int | None = None
) -> dict:
    argv = [sys.executable, "-m", "bench.client", name, "--state", str(state_file), "--container", CONTAINER]
    if profile:
        argv += ["--profile", str(profile)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    with open(log_dir / f"bench-{name}.log", "wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        assert process.stdout is not None  # stdout=PIPE
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (log_dir / f"bench-{name}.log").read_text(errors="replace").strip().splitlines()[-8:]
        raise RuntimeError(f"bench client {name} exited with {code}:\n  " + "\n  ".join(tail))
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024  # includes the pre-exec fork of this driver
    return result


def median_run(runs: list[dict]) -> dict:
    """One client's figures over several rounds: median time and CPU, the highest peak RSS."""
    out = dict(runs[-1])
    for key in ("seconds", "cpu_seconds", "load_1min_before"):
        out[key] = statistics.median(r[key] for r in runs)
    out["server_cpu_seconds"] = {
        n: statistics.median(r["server_cpu_seconds"][n] for r in runs) for n in runs[-1]["server_cpu_seconds"]
    }
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["runs"] = [{k: r[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb", "load_1min_before")} for r in runs]
    return out


def measure(
    docs: int,
    profile: bool,
    directory: Path,
    repeat: int = 1,
    latencies: tuple[float, ...] = (0.0,),
    sweep: tuple[int, ...] = (),
) -> dict:
    state = sb.up(directory, "dev", "gateway", timeout=180)
    try:
        seeder = GatewaySeeder(state["seed"]["control_url"], state["ca_bundle"])
        started = time.perf_counter()
        dataset_bytes = 0

        def counted():
            nonlocal dataset_bytes
            for doc in sample_documents(docs):
                dataset_bytes += len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
                yield doc

        seeded = seeder.seed(state["database"], CONTAINER, counted())
        seed_seconds = time.perf_counter() - started
        print(f"seeded {seeded} documents ({dataset_bytes / 1e6:.1f} MB of JSON) in {seed_seconds:.1f}s", flush=True)
        servers = {name: pid for name, pid in state["pids"].items()}

        def one(name: str, label: str, prof: Path | None = None, concurrency: int | None = None) -> dict:
            load = os.getloadavg()[0]
            before = {n: process_cpu_seconds(pid) for n, pid in servers.items()}
            result = run_client(name, directory / sb.STATE_FILE, directory, prof, concurrency)
            result["server_cpu_seconds"] = {
                n: round(process_cpu_seconds(pid) - before[n], 2) for n, pid in servers.items()
            }
            result["load_1min_before"] = load
            if result["documents"] != seeded:
                raise RuntimeError(f"{name} read {result['documents']} documents, {seeded} were seeded")
            shown = rates(dict(result), seeded, dataset_bytes)
            print(
                f"{label:<22} {shown['seconds']:7.1f}s  {shown['docs_per_s']:8.0f} docs/s  "
                f"{shown['mb_per_s']:6.2f} MB/s  CPU {shown['cpu_s_per_100k']:6.1f}s/100k  "
                f"peak RSS {shown['peak_rss_mb']:6.0f} MB  servers' CPU {shown['server_cpu_s_per_100k']:4.1f}s/100k  "
                f"(load {load:.2f} before)",
                flush=True,
            )
            return result

        by_latency: dict[str, dict] = {}
        for ms in latencies:
            seeder.set_latency(ms)
            runs: dict[str, list[dict]] = {name: [] for name in CLIENT_NAMES}
            # Rounds interleave the clients, so a burst of load on the shared machine hits them alike.
            for name in [n for _ in range(repeat) for n in CLIENT_NAMES]:
                prof = directory / f"profile-{name}.txt" if profile and name == "worker" and ms == 0 else None
                runs[name].append(one(name, f"{name} @{ms:g} ms", prof))
            clients = {name: rates(median_run(rs), seeded, dataset_bytes) for name, rs in runs.items()}
            by_latency[f"{ms:g}"] = {"latency_ms": ms, "clients": clients, "ratios": ratios(clients)}
        swept: dict[str, dict] = {}
        if sweep:
            ms = max(latencies)
            seeder.set_latency(ms)
            for concurrency in sweep:
                result = one("worker", f"worker c={concurrency} @{ms:g} ms", concurrency=concurrency)
                swept[str(concurrency)] = rates(result, seeded, dataset_bytes)
    finally:
        sb.down(directory)
    return {
        "docs": docs,
        "dataset_bytes": dataset_bytes,
        "seed_seconds": seed_seconds,
        "latencies": by_latency,
        "sweep": {"latency_ms": max(latencies), "concurrency": swept} if swept else None,
        "machine": machine(),
        "repeat": repeat,
        "command": f".venv/bin/python -m bench --docs {docs}"
        + (f" --repeat {repeat}" if repeat > 1 else "")
        + f" --latency-ms {' '.join(f'{ms:g}' for ms in latencies)}"
        + (f" --sweep {' '.join(map(str, sweep))}" if sweep else ""),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def ratios(clients: dict[str, dict]) -> dict[str, float]:
    return {
        "worker_over_floor_cpu": clients["worker"]["cpu_seconds"] / clients["floor"]["cpu_seconds"],
        "worker_over_floor_tuned_cpu": clients["worker"]["cpu_seconds"] / clients["floor_tuned"]["cpu_seconds"],
        "worker_over_naive_throughput": clients["worker"]["docs_per_s"] / clients["naive"]["docs_per_s"],
        "floor_over_naive_throughput": clients["floor"]["docs_per_s"] / clients["naive"]["docs_per_s"],
    }


def at_latency(result: dict, ms: float = 0.0) -> dict:
    """The clients and ratios of one latency (results written before latencies existed: their only one, 0 ms)."""
    if "latencies" not in result:
        return {"latency_ms": 0.0, "clients": result["clients"], "ratios": result["ratios"]}
    return result["latencies"].get(f"{ms:g}") or next(iter(result["latencies"].values()))


def rates(result: dict, seeded: int, dataset_bytes: int) -> dict:
    result["docs_per_s"] = seeded / result["seconds"]
    result["mb_per_s"] = dataset_bytes / 1e6 / result["seconds"]
    result["cpu_s_per_100k"] = result["cpu_seconds"] * 100_000 / seeded
    result["server_cpu_s_per_100k"] = sum(result["server_cpu_seconds"].values()) * 100_000 / seeded
    return result


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return f"{cpu}, {os.cpu_count()} vCPU, {mem} MB RAM, Linux {platform.release()}, Python {platform.python_version()}"


NOTES_MARKER = "<!-- Notes below are written by hand; `.venv/bin/python -m bench` keeps them. -->"
TARGETS = (
    "worker CPU/doc <= 1.25x floor_tuned and throughput >= 2x naive at 0 ms; worker peak RSS at 1M <= 1.2x at 100k "
    "and < 300 MB"
)


def rss_ratio(results: dict[int, dict]) -> tuple[float, float, float] | None:
    if 100_000 not in results or 1_000_000 not in results:
        return None
    small = at_latency(results[100_000])["clients"]["worker"]["peak_rss_mb"]
    big = at_latency(results[1_000_000])["clients"]["worker"]["peak_rss_mb"]
    return small, big, big / small


def render(results: dict[int, dict], notes: str) -> str:
    lines = [
        "# Performance",
        "",
        "Export benchmark (`make bench` runs 100k and 1M documents; `.venv/bin/python -m bench --docs N [N ...]`",
        "for other sizes): N realistic ~1 KB nested documents bulk-loaded into the Cosmos gateway double",
        "(AAD auth and RBAC on, 4 feed ranges, dev stack settings: concurrency 2, 16 MB parts, zstd), then,",
        "one after the other and each in its own process: **floor** = drain every feed range's change feed",
        "with the SDK as shipped (threads, same page size and concurrency) and discard the documents;",
        "**worker** = the worker's snapshot export (`run_export`: zstd JSON Lines, multipart to moto S3,",
        "manifest + checkpoint); **naive** = `read_all_items`, `json.dumps` per document, buffered, one",
        "`put_object`; **floor_tuned** (diagnostic) = the floor read the way the worker reads: its",
        "garbage-collector setting (`export.bulk_gc`) and its SDK response parser (`sdk_json`: msgspec,",
        "stdlib fallback). CPU seconds and peak RSS are the client process's own (`os.wait4`",
        "rusage, `VmHWM`), not the local servers'; *servers' CPU* is what the gateway double (+ STS/Entra",
        "doubles) and moto spent meanwhile. MB/s counts the documents' compact JSON bytes. *load* is the",
        "1-minute load average just before the client started (2 vCPUs: 2.0 = busy). With `--repeat N`",
        "the four clients run N rounds, interleaved; the tables show medians (peak RSS: the highest).",
        "Each table is one round-trip latency the gateway double adds to every Cosmos response",
        "(`--latency-ms`, default 0 and 20: AWS to Azure is typically 5-30 ms); the concurrency sweep runs",
        "the worker once per `EXPORT_CONCURRENCY` (`--sweep`, default 1 2 4 8) at the highest latency.",
        "",
    ]
    for docs, r in sorted(results.items()):
        lines += [
            f"## {docs:,} documents ({r['dataset_bytes'] / 1e6:.0f} MB of JSON)",
            "",
            f"Machine: {r['machine']}  ",
            f"Command: `{r['command']}` ({r['at']})",
            "",
        ]
        tables = list(r["latencies"].values()) if "latencies" in r else [at_latency(r)]
        for table in tables:
            lines += [
                f"### {docs:,} documents, {table['latency_ms']:g} ms round trip",
                "",
                "| client | wall s | docs/s | MB/s | CPU s / 100k docs | peak RSS MB | servers' CPU s / 100k | load |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for name, c in table["clients"].items():
                lines.append(client_row(name, c))
            ratios = table["ratios"]
            lines += [
                "",
                f"worker/floor_tuned CPU: **{ratios['worker_over_floor_tuned_cpu']:.2f}x** (target <= 1.25x at 0 ms); "
                f"worker/naive throughput: **{ratios['worker_over_naive_throughput']:.2f}x** (target >= 2x at 0 ms); "
                f"worker/floor CPU: {ratios['worker_over_floor_cpu']:.2f}x; "
                f"floor/naive throughput: {ratios['floor_over_naive_throughput']:.2f}x",
                "",
            ]
        if r.get("sweep"):
            lines += [
                f"### {docs:,} documents, worker by EXPORT_CONCURRENCY at {r['sweep']['latency_ms']:g} ms",
                "",
                "| concurrency | wall s | docs/s | MB/s | CPU s / 100k docs | peak RSS MB | servers' CPU s / 100k | load |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            lines += [client_row(n, c) for n, c in r["sweep"]["concurrency"].items()]
            lines.append("")
    ratio = rss_ratio(results)
    if ratio:
        small, big, factor = ratio
        lines += [
            f"Worker peak RSS at 1M vs 100k: {big:.0f} MB / {small:.0f} MB = **{factor:.2f}x** "
            "(target <= 1.2x and < 300 MB).",
            "",
        ]
    lines += [NOTES_MARKER, "", notes.strip(), ""] if notes.strip() else [NOTES_MARKER, ""]
    return "\n".join(lines)


def client_row(name: str, c: dict) -> str:
    server = f"{c['server_cpu_s_per_100k']:.1f}" if "server_cpu_s_per_100k" in c else "-"
    load = f"{c['load_1min_before']:.2f}" if "load_1min_before" in c else "-"
    return (
        f"| {name} | {c['seconds']:.1f} | {c['docs_per_s']:,.0f} | {c['mb_per_s']:.2f} | "
        f"{c['cpu_s_per_100k']:.1f} | {c['peak_rss_mb']:.0f} | {server} | {load} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docs",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="container sizes to measure, one sandbox each (default: 100000 1000000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the four clients per size; the table shows medians (peak RSS: the highest)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="round-trip delays the gateway double adds per response, one table each (default: 0 20)",
    )
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[1, 2, 4, 8],
        help="EXPORT_CONCURRENCY values the worker runs with at the highest latency (default: 1 2 4 8; none: skip)",
    )
    parser.add_argument("--profile", action="store_true", help="profile the worker client with pyinstrument")
    parser.add_argument("--dir", type=Path, default=REPO / ".sandbox" / "bench")
    args = parser.parse_args()
    for docs in args.docs:
        if docs < 1000:
            parser.error(f"--docs={docs}: use at least 1000 documents for meaningful rates")
    for docs in args.docs:
        result = measure(docs, args.profile, args.dir.resolve(), args.repeat, tuple(args.latency_ms), tuple(args.sweep))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{docs}.json").write_text(json.dumps(result, indent=2) + "\n")
        results = {int(p.stem): json.loads(p.read_text()) for p in RESULTS.glob("*.json") if p.stem.isdigit()}
        previous = DOC.read_text() if DOC.exists() else ""
        notes = previous.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in previous else ""
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(render(results, notes))
        for table in result["latencies"].values():
            print(
                f"{docs} docs @{table['latency_ms']:g} ms: worker/floor_tuned CPU "
                f"{table['ratios']['worker_over_floor_tuned_cpu']:.2f}x, worker/naive throughput "
                f"{table['ratios']['worker_over_naive_throughput']:.2f}x; wrote {DOC}",
                flush=True,
            )
    ratio = rss_ratio(results)
    if ratio:
        small, big, factor = ratio
        print(f"worker peak RSS 1M/100k: {big:.0f} MB / {small:.0f} MB = {factor:.2f}x (target <= 1.2x, < 300 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
