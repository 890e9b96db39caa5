"""`make mutation`: mutmut 3 over the worker's core modules, one module at a time (docs/mutation.md).

Run from mutation/ (mutmut's layout: src/, tests/ and the rest are links, see pyproject.toml here).
One moto server for every mutant's tests (TESTS_MOTO_URL, tests/conftest.py); prints the score per module.

    ../.venv/bin/python run.py [--max-children 2] [module ...]     # modules: commit layout sink schema settings
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from sandbox.services import start_moto  # noqa: E402

MODULES = ("commit", "layout", "sink", "schema", "settings")


def results() -> dict[str, Counter]:
    """mutmut's verdicts (killed, survived, no tests, timeout, ...) per module."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per: dict[str, Counter] = {}
    for line in out.splitlines():
        name, _, verdict = line.strip().rpartition(": ")
        if name.startswith("cosmos_export."):
            per.setdefault(name.split(".")[1], Counter())[verdict] += 1
    return per


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("modules", nargs="*", default=list(MODULES), choices=MODULES)
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    mutmut = str(Path(sys.executable).parent / "mutmut")
    with start_moto() as moto:
        # 30 hypothesis examples per mutant for the page-equals-per-document property (200 in `make test`).
        env = {**os.environ, "TESTS_MOTO_URL": moto.url, "TESTS_HYPOTHESIS_EXAMPLES": "30"}
        for module in args.modules:
            print(f"==> mutmut run cosmos_export.{module}.*", flush=True)
            code = subprocess.run(
                [mutmut, "run", f"cosmos_export.{module}.*", "--max-children", str(args.max_children)],
                cwd=HERE,
                env=env,
                stdout=subprocess.DEVNULL,
            ).returncode
            if code:
                print(f"mutmut exited {code} for {module}", file=sys.stderr)
                return code
    per = results()
    print(f"{'module':10} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'other':>6} {'score':>6}")
    for module in args.modules:
        c = per.get(module, Counter())
        total = sum(c.values())
        other = total - c["killed"] - c["survived"] - c["no tests"]
        score = 100 * c["killed"] / total if total else 0.0
        print(f"{module:10} {total:8} {c['killed']:7} {c['survived']:9} {c['no tests']:9} {other:6} {score:5.1f}%")
    print("Survivors: `cd mutation && ../.venv/bin/mutmut results`; one: `../.venv/bin/mutmut show <name>`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
