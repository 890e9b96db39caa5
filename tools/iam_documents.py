"""Write every IAM, bucket and key policy document the program and the bootstrap build (under mocks) to JSON.

For the public IAM scanners, which read files:

    .venv/bin/python tools/iam_documents.py OUT_DIR
    parliament --directory OUT_DIR/identity --include-community-auditors --json
    python tools/iam_access_levels.py OUT_DIR/identity      # policy_sentry's access-level counts

OUT_DIR/identity holds the identity policies (role inline and managed policies, the permissions
boundaries), which parliament and policy_sentry analyse; OUT_DIR/resource the trust, bucket and key
policies (resource policies), written for review.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_IDENTITY = {"aws:iam/rolePolicy:RolePolicy": "policy", "aws:iam/policy:Policy": "policy"}
_RESOURCE = {
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:kms/key:Key": "policy",
}


def _write(out: Path, kind: str, name: str, document) -> None:
    if not document:
        return
    doc = json.loads(document) if isinstance(document, str) else document
    path = out / kind / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main(out: Path) -> None:
    from sandbox.mocked_stack import run_stack, stack_names

    sys.path.insert(0, str(REPO / "bootstrap"))
    import mocked as bootstrap

    for stack in stack_names():
        for r in run_stack(stack).resources:
            for table, kind in ((_IDENTITY, "identity"), (_RESOURCE, "resource")):
                if r.type_ in table:
                    _write(
                        out, kind, f"program-{stack}-{r.type_.rsplit(':', 1)[1]}-{r.name}", r.inputs.get(table[r.type_])
                    )
    for stack in bootstrap.STACKS:
        for type_, name, props in bootstrap.run(stack):
            for table, kind in ((_IDENTITY, "identity"), (_RESOURCE, "resource")):
                if type_ in table:
                    _write(out, kind, f"bootstrap-{stack}-{type_.rsplit(':', 1)[1]}-{name}", props.get(table[type_]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "iam-documents"))
