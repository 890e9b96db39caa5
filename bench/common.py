"""What the restore and materialize benchmarks share: the measured child process, moto's bucket, the
results files and their section of docs/performance.md."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
#: The children run from the repository with fixed, non-secret moto credentials.
CHILD_ENV = {"PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM), in MB."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024


def versioned_bucket(moto_url: str, bucket: str) -> Any:
    """An S3 client of moto with `bucket` created, versioning on (as the stack's bucket)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3


def run_measured(argv: list[str], log: Path) -> tuple[dict, float]:
    """Run a child (stderr to `log`); its last stdout line as JSON and its CPU seconds (os.wait4 rusage)."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, **CHILD_ENV}, stdout=subprocess.PIPE, stderr=stderr
        )
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv[1:4])} failed: see {log}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_utime + usage.ru_stime


def write_section(begin: str, end: str, body: str) -> None:
    """Replace (or append) one benchmark's section of docs/performance.md, between its markers. The sections
    sit after the notes marker, which the export benchmark keeps verbatim, so each benchmark can run alone."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"{begin}\n{body}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)


def rss_ratio_line(what: str, results: dict[int, dict], command: str) -> list[str]:
    if 100_000 in results and 1_000_000 in results:
        small, big = results[100_000]["peak_rss_mb"], results[1_000_000]["peak_rss_mb"]
        return [
            "",
            f"{what} peak RSS at 1M vs 100k: {big:.0f} MB / {small:.0f} MB = **{big / small:.2f}x** "
            "(target <= 1.2x and < 300 MB).",
        ]
    return ["", f"1M: not measured yet (`{command} --docs 1000000`)."]


def main(
    name: str,
    doc: str,
    measure: Callable[[int, Path], dict],
    render: Callable[[dict[int, dict]], str],
    markers: tuple[str, str],
) -> int:
    """`.venv/bin/python -m bench.<name> [--docs N ...]`: measure each size, keep bench/results/<name>-<N>.json, rewrite
    the section from every result kept (sizes not measured this time keep their last row)."""
    parser = argparse.ArgumentParser(prog=f".venv/bin/python -m bench.{name}", description=doc.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=REPO / ".sandbox" / f"bench-{name}")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for docs in args.docs:
        result = measure(docs, args.dir.resolve())
        (RESULTS / f"{name}-{docs}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{name} {docs}: {result['seconds']:.1f}s, {result['docs_per_s']:.0f} docs/s, CPU "
            f"{result['cpu_s_per_100k']:.1f}s/100k, peak RSS {result['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    results = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in RESULTS.glob(f"{name}-*.json")}
    write_section(*markers, render(results))
    return 0
