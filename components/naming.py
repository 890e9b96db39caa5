"""Names the program gives its AWS resources, and the bootstrap's deployer policies scope to.

One home for both sides (bootstrap/deployer.py imports this module): a deployer
may touch a resource only because its name (or tag) says it belongs to the
deployer's stack, so the program and the policy must derive names identically.
Pure functions, no Pulumi import.
"""

from __future__ import annotations

#: Every program role lives under this path, one sub-path per stack.
ROLE_PATH_ROOT = "/cosmos-s3-export/"
#: Tag on the resources whose ARNs carry no name (KMS keys, security groups, task definitions):
#: the deployer's policy matches aws:ResourceTag / aws:RequestTag on it.
STACK_TAG = "cosmos-s3-export-stack"
#: Tag telling the audit key apart from the export key (the deployer may never delete the audit key).
PURPOSE_TAG = "cosmos-s3-export-purpose"


def prefix(stack: str) -> str:
    """Logical and physical name prefix of every resource of a stack (Pulumi auto-names keep it)."""
    return f"export-{stack}"


def role_path(stack: str) -> str:
    return f"{ROLE_PATH_ROOT}{stack}/"


def role_name(stack: str, kind: str) -> str:
    """Fixed role names: the bucket and key policies name the roles before they exist."""
    return f"{prefix(stack)}-{kind}"


def role_arn(account_id: str, stack: str, kind: str) -> str:
    return f"arn:aws:iam::{account_id}:role{role_path(stack)}{role_name(stack, kind)}"


def boundary_name(stack: str) -> str:
    return f"cosmos-s3-export-{stack}-boundary"


def boundary_arn(account_id: str, stack: str) -> str:
    """The permissions boundary bootstrap creates; every program role must carry it."""
    return f"arn:aws:iam::{account_id}:policy/{boundary_name(stack)}"


def deployer_role_name(stack: str, kind: str = "deploy") -> str:
    """The CI identities bootstrap creates (kind 'deploy' or 'preview')."""
    return f"gh-{stack}-{kind}"


def audit_bucket_name(bucket: str) -> str:
    """The audit trail's own bucket (63 characters at most: config checks the export bucket leaves room)."""
    return f"{bucket}-audit"


AUDIT_BUCKET_SUFFIX_LENGTH = len(audit_bucket_name(""))


def trail_name(bucket: str) -> str:
    return f"{bucket}-writes"
