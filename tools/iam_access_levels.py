"""Count each policy's actions per IAM access level with policy_sentry (its wildcards expanded).

    python tools/iam_access_levels.py DIR      # DIR/*.json, e.g. from tools/iam_documents.py

Needs policy_sentry (pip install policy_sentry; a scanner, not a project dependency). Only Allow
statements count: a Deny narrows, it grants nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from policy_sentry.analysis.analyze import analyze_by_access_level

LEVELS = ("Permissions management", "Write", "Tagging", "Read", "List")


def counts(document: dict) -> dict[str, int]:
    allow = {**document, "Statement": [s for s in document["Statement"] if s.get("Effect") == "Allow"]}
    return {level: len(analyze_by_access_level(allow, level)) for level in LEVELS}


if __name__ == "__main__":
    total = dict.fromkeys(LEVELS, 0)
    for path in sorted(Path(sys.argv[1]).glob("*.json")):
        c = counts(json.loads(path.read_text()))
        total = {k: total[k] + c[k] for k in LEVELS}
        print(f"{path.stem:70s} " + " ".join(f"{k.split()[0][:5]}={v}" for k, v in c.items()))
    print(f"{'TOTAL':70s} " + " ".join(f"{k.split()[0][:5]}={v}" for k, v in total.items()))
