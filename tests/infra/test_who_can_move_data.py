"""README.md's "Who can move data" table is what docs/who_can_move_data.py derives from the programs' policies.

Regenerate it with `python docs/sync_readme.py` (or `python docs/who_can_move_data.py`) after changing a role.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

import who_can_move_data as generator  # noqa: E402


def readme_table() -> str:
    m = re.search(r"<!-- BEGIN identities -->\n(.*?)<!-- END identities -->", (ROOT / "README.md").read_text(), re.S)
    assert m, "README.md lost its identities block"
    return m.group(1)


def test_the_readme_table_is_the_generated_one():
    assert readme_table() == generator.table(), "README 'Who can move data' is stale: run python docs/sync_readme.py"


def test_the_table_covers_every_identity_and_says_what_moves_data():
    rows = {line.split(" | ")[0].strip("| `"): line for line in readme_table().splitlines()[2:]}
    assert {
        "export-<stack>-task",
        "export-<stack>-restore-task",
        "export-<stack>-execution",
        "export-<stack>-scheduler",
        "export-<stack>-restore-scheduler",
        "export-<stack>-operator-export",
        "export-<stack>-operator-restore",
        "export-<stack>-operator-status",
        "gh-<stack>-deploy",
        "gh-<stack>-preview",
    } <= set(rows)
    # Only the schedulers and the operators may start tasks, and each passes only its task's two roles.
    starters = {name for name, row in rows.items() if "(any revision, in the stack's cluster)" in row}
    operators_who_run = {
        n for n in rows if "operator-" in n and {"export", "restore"} & set(n.split("operator-")[1].split("-"))
    }
    assert starters == {n for n in rows if "scheduler" in n} | operators_who_run
    assert "`export-<stack>-restore-task (to ecs-tasks)`" not in rows["export-<stack>-operator-export"]
    assert "`export-<stack>-task (to ecs-tasks)`" not in rows["export-<stack>-operator-restore"]
    # The status role reads state objects, never a data part.
    assert (
        "data/" not in rows["export-<stack>-operator-status"]
        and "`<container>/manifests/*`" in rows["export-<stack>-operator-status"]
    )


def test_a_policy_change_changes_the_table():
    """The table is derived, not copied: a role's policy summarised differently gives a different table."""
    names = generator._Names("prod", "444455556666", [])
    doc = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ecs:RunTask",
                "Resource": "arn:aws:ecs:r:444455556666:task-definition/export-prod:*",
            }
        ]
    }
    assert generator._summary([doc], names)["May start"] == "`export-<stack>` (any revision, in the stack's cluster)"
    doc["Statement"][0]["Resource"] = "arn:aws:ecs:r:444455556666:task-definition/export-prod-restore:*"
    assert "`export-<stack>-restore`" in generator._summary([doc], names)["May start"]
