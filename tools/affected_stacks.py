#!/usr/bin/env python3
"""Which stacks a pull request affects: the matrix of the policy-checked previews.

    python3 tools/affected_stacks.py BASE [HEAD]   # prints: stacks=["dev","prod"]  (GitHub output syntax)

A change to `stacks/Pulumi.<stack>.yaml` affects that stack; a change that no
deployed resource depends on (documentation, tests, the sandbox, the
benchmark, the bootstrap program, developer tools) affects none; anything else
(the program, the worker image, the policy pack, dependencies, the workflows
themselves) affects every stack. Unknown paths count as "everything": a
preview too many costs minutes, a missed one ships an unreviewed change.
Standard library only, so the CI job needs no install step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

_STACK_FILE = re.compile(r"^stacks/Pulumi\.([^/]+)\.yaml$")
#: Paths no deployed resource is built from.
NO_EFFECT_DIRS = ("docs/", "tests/", "bench/", "sandbox/", "bootstrap/", "tools/")
NO_EFFECT_FILES = ("pytest.ini", "requirements-test.txt", ".gitignore", "LICENSE")


def affected(changed: list[str], stacks: list[str]) -> list[str]:
    """The stacks (in the order given) that `changed` paths can alter."""
    hit: set[str] = set()
    for path in changed:
        m = _STACK_FILE.match(path)
        if m:
            hit.add(m.group(1))
        elif path.endswith(".md") or path.startswith(NO_EFFECT_DIRS) or path in NO_EFFECT_FILES:
            continue
        else:
            return list(stacks)
    return [s for s in stacks if s in hit]  # a deleted stack file has nothing left to preview


def stacks_of(repo: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (repo / "stacks").glob("Pulumi.*.yaml"))


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: affected_stacks.py BASE [HEAD]", file=sys.stderr)
        return 2
    base, head = argv[0], argv[1] if len(argv) == 2 else "HEAD"
    repo = Path(
        subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    diff = subprocess.run(
        ["git", "diff", "--name-only", "--no-renames", base, head], cwd=repo, capture_output=True, text=True
    )
    if diff.returncode != 0:
        print(
            f"git diff {base} {head} failed: {diff.stderr.strip()} (fetch the base commit: checkout with "
            "fetch-depth: 0)",
            file=sys.stderr,
        )
        return 1
    changed = [line for line in diff.stdout.splitlines() if line]
    print(f"stacks={json.dumps(affected(changed, stacks_of(repo)), separators=(',', ':'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
