"""The README's "Who can move data" table, generated from the policies the programs themselves declare.

Every IAM role of every stack in stacks/ (the main program under mocks) and every deployer role of
bootstrap/ (under its mocks) becomes one row: who may become it (its trust), for how long, which task
families it may start, which roles it may pass, which export objects it may read, write or delete,
what its Entra identity may do in Cosmos DB, and its remaining actions. Names are shown with
`<stack>` and `<account>`; a cell that differs between stacks says so per stack.

    .venv/bin/python docs/who_can_move_data.py         # rewrites README.md between its identities markers
tests/infra/test_who_can_move_data.py fails when README.md and this output disagree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = (
    "Identity",
    "Stacks",
    "Who can become it",
    "Max session",
    "May start",
    "May pass",
    "Export objects",
    "Cosmos DB",
    "Other actions",
)
_S3_OBJECT = re.compile(r"^arn:aws:s3:::[^/]+/(?P<key>.*)$")
_SQL = "Microsoft.DocumentDB/databaseAccounts/"


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _code(items) -> str:
    return ", ".join(f"`{i}`" for i in items) if items else "-"


class _Names:
    """Turns one stack's concrete names into the table's placeholders."""

    def __init__(self, stack: str, account: str, container_roots: list[str]):
        self.stack, self.account = stack, account
        self.roots = sorted(container_roots, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for root in self.roots:
            text = text.replace(f"{root}/", "<container>/")
        return (
            text.replace(f"/cosmos-s3-export/{self.stack}/", "/cosmos-s3-export/<stack>/")
            .replace(f"export-{self.stack}", "export-<stack>")
            .replace(f"gh-{self.stack}-", "gh-<stack>-")
            .replace(f":environment:{self.stack}", ":environment:<stack>")
            .replace(self.account, "<account>")
        )


def _who(trust: dict, names: _Names, listed_in: str = "`operators`") -> str:
    out = []
    for st in _list(trust.get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal") or {}
        services = _list(principal.get("Service"))
        if "ecs-tasks.amazonaws.com" in services:
            out.append("ECS tasks of this account and region")
        elif "scheduler.amazonaws.com" in services:
            out.append("EventBridge Scheduler, this account's default group")
        elif principal.get("Federated"):
            subs = [v for c in (st.get("Condition") or {}).values() for k, v in c.items() if k.endswith(":sub")]
            out.append(f"GitHub OIDC, subject {_code(sorted(names(str(s)) for v in subs for s in _list(v)))}")
        elif principal.get("AWS"):
            pinned = (st.get("Condition") or {}).get("ArnEquals", {}).get("aws:PrincipalArn")
            if pinned:
                out.append(f"the Identity Center permission-set roles listed in {listed_in}, by `aws:PrincipalArn`")
            else:
                out.append(f"the IAM roles listed in {listed_in}")
    return "; ".join(out)


def _summary(documents: list[dict], names: _Names) -> dict[str, str]:
    starts, passes, reads, writes, deletes, other = set(), set(), set(), set(), set(), set()
    for doc in documents:
        for st in _list(doc.get("Statement")):
            if st.get("Effect") != "Allow":
                continue
            actions = [str(a) for a in _list(st.get("Action"))]
            resources = [str(r) for r in _list(st.get("Resource"))]
            for a in actions:
                if a == "ecs:RunTask":
                    starts |= {names(r.split("/", 1)[1].removesuffix(":*")) for r in resources}
                elif a == "iam:PassRole":
                    services = _list((st.get("Condition") or {}).get("StringEquals", {}).get("iam:PassedToService"))
                    to = "/".join(s.split(".")[0] for s in services)
                    passes |= {
                        f"{names(r.rsplit('/', 1)[1] if not r.endswith('/*') else r.split(':role', 1)[1])} (to {to})"
                        for r in resources
                    }
                elif a.startswith("s3:") and any(_S3_OBJECT.match(r) for r in resources):
                    keys = {names(m["key"]) for r in resources if (m := _S3_OBJECT.match(r))}
                    if a.startswith("s3:Get"):
                        reads |= keys
                    elif a.startswith("s3:Delete"):
                        deletes |= keys
                    elif a.startswith("s3:Put") and "Tagging" not in a:
                        writes |= keys
                elif a.startswith(("s3:GetObject", "s3:PutObject", "s3:AbortMultipart", "s3:ListMultipartUploadParts")):
                    continue
                elif a.startswith("kms:") and "kms:ViaService" in json.dumps(st.get("Condition") or {}):
                    other.add(f"{a} (via S3)")
                else:
                    other.add(a)
    objects = "; ".join(
        f"{kind} {_code(sorted(keys))}"
        for kind, keys in (("read", reads), ("write", writes), ("delete", deletes))
        if keys
    )
    # The analyst role's catalog reads and queries, in two words each (the deployer's stay "many").
    glue, athena = {a for a in other if a.startswith("glue:Get")}, {a for a in other if a.startswith("athena:")}
    if glue and athena and not {a for a in other if a.startswith(("glue:", "athena:"))} - glue - athena:
        other = (other - glue - athena) | {"glue:Get* (its catalog)", "athena queries (its workgroup)"}
    many = len(other) > 12
    return {
        "May start": _code(sorted(starts)) + (" (any revision, in the stack's cluster)" if starts else ""),
        "May pass": _code(sorted(passes)),
        "Export objects": objects or "-",
        "Other actions": "create and change the stack's own resources (`bootstrap/deployer.py`)"
        if many
        else _code(sorted(other)),
    }


def _cosmos(run, role_arn: str, exported: set[str]) -> str:
    """What the Entra identity federated to this role may do in Cosmos DB (its SQL role assignments)."""
    fics = [f for f in run.federated_credentials() if f["subject"] == role_arn]
    if not fics:
        return "-"
    apps = {
        r.outputs["id"]: r.outputs["clientId"]
        for r in run.of_type("azuread:index/application:Application")
        if any(
            f.inputs["applicationId"] == r.outputs["id"] and f.inputs["subject"] == role_arn
            for f in run.of_type(
                "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
            )
        )
    }
    sps = {
        r.outputs["objectId"]
        for r in run.of_type("azuread:index/servicePrincipal:ServicePrincipal")
        if r.inputs.get("clientId") in apps.values()
    }
    assignments = [a for a in run.cosmos_role_assignments() if a["principal_id"] in sps]
    if not assignments:
        return "-"
    actions = sorted(
        {a.removeprefix(_SQL).removeprefix("sqlDatabases/containers/") for x in assignments for a in x["data_actions"]}
    )
    containers = {x["relative_scope"].rsplit("/colls/", 1)[-1] for x in assignments}
    where = "each exported container" if containers <= exported else "the restore targets only"
    return f"{_code(actions)} on {where}"


def _rows_of_program(stack: str) -> list[tuple[str, dict[str, str]]]:
    from components import policies
    from sandbox.mocked_stack import run_stack

    run = run_stack(stack)
    account = run.task_role_arn.split(":")[4]
    env = run.worker_environment
    exported = env["EXPORT_COSMOS_CONTAINERS"].split(",")
    roots = policies.container_prefixes(
        prefix=env["EXPORT_PREFIX"],
        account=run.config["cosmos-s3-export:cosmosAccountName"],
        database=env["EXPORT_COSMOS_DATABASE"],
        containers=exported,
    )
    names = _Names(stack, account, roots)
    rows = []
    for role in run.of_type("aws:iam/role:Role"):
        documents = [
            json.loads(p.inputs["policy"])
            for p in run.of_type("aws:iam/rolePolicy:RolePolicy")
            if p.inputs["role"] == role.outputs["id"]
        ]
        cells = {
            "Who can become it": _who(
                json.loads(role.inputs["assumeRolePolicy"]),
                names,
                "`analystPrincipals`" if role.inputs["name"].endswith("-analyst") else "`operators`",
            ),
            "Max session": f"{int(role.inputs.get('maxSessionDuration', 3600)) // 60} min",
            **_summary(documents, names),
            "Cosmos DB": _cosmos(run, role.outputs["arn"], set(exported)),
        }
        rows.append((names(role.inputs["name"]), cells))
    return rows


def _rows_of_bootstrap(stack: str) -> list[tuple[str, dict[str, str]]]:
    sys.path.insert(0, str(ROOT / "bootstrap"))
    import mocked  # bootstrap/mocked.py

    registered = mocked.run(stack)
    names = _Names(stack, mocked.ACCOUNTS.get(stack, "123456789012"), [])
    policies = {
        n.removesuffix("-policy"): json.loads(p["policy"])
        for n, p in mocked.of(registered, "aws:iam/rolePolicy:RolePolicy")
    }
    rows = []
    for logical, props in mocked.of(registered, "aws:iam/role:Role"):
        cells = {
            "Who can become it": _who(json.loads(props["assumeRolePolicy"]), names),
            "Max session": f"{int(props.get('maxSessionDuration', 3600)) // 60} min",
            **_summary([policies[logical]], names),
            "Cosmos DB": "-",
        }
        rows.append((names(props["name"]), cells))
    return rows


def table() -> str:
    """The markdown table: one row per identity, stacks where it exists, cells per stack where they differ."""
    from sandbox.mocked_stack import stack_names

    sys.path.insert(0, str(ROOT / "bootstrap"))
    import mocked

    per_identity: dict[str, dict[str, dict[str, str]]] = {}
    for stack in stack_names():
        for name, cells in _rows_of_program(stack):
            per_identity.setdefault(name, {})[stack] = cells
    for stack in mocked.STACKS:
        for name, cells in _rows_of_bootstrap(stack):
            per_identity.setdefault(name, {})[stack] = cells
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in sorted(per_identity, key=lambda n: (n.startswith("gh-"), n)):
        by_stack = per_identity[name]
        row = [f"`{name}`", ", ".join(sorted(by_stack))]
        for column in COLUMNS[2:]:
            values = {s: c[column] for s, c in by_stack.items()}
            if len(set(values.values())) == 1:
                row.append(next(iter(values.values())))
            else:
                row.append("; ".join(f"{s}: {v}" for s, v in sorted(values.items())))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def embed(readme: str, body: str) -> str:
    pattern = re.compile(r"(<!-- BEGIN identities -->\n).*?(<!-- END identities -->)", re.S)
    if not pattern.search(readme):
        raise SystemExit("README.md has no <!-- BEGIN identities --> ... <!-- END identities --> block; add it back")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), readme)


def main() -> int:
    path = ROOT / "README.md"
    path.write_text(embed(path.read_text(encoding="utf-8"), table()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
