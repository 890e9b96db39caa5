"""IAM enforced by moto: the task roles as the program declares them, then authorization switched on.

moto checks every signed request against the caller's identity policies once its authorization mode
is on (`POST /moto-api/reset-auth` with the number of requests left unchecked: 0 = all of them, inf =
none; README "IAM in the sandbox"). `provision` switches it off, creates each declared role (path,
name, trust policy, maximum session, every inline policy) in the stack's account, lets the caller do
its own bootstrap (AssumeRole of the task roles, the bucket), and switches it on again: from then on
a worker call the task role's policy does not allow fails with AccessDenied, as in AWS.

What moto evaluates: the actions and resources of the role's inline policies (S3 here). What it does
not: conditions (s3:prefix, kms:ViaService; the STS double checks the sts:GetWebIdentityToken ones),
KMS, the trust policy of a role the caller assumes before enforcement, permissions boundaries, bucket
policies. Two of its quirks are translated here, never changed in the stack's policy:
- it refuses a number as a condition value (`"NumericLessThanEquals": {"sts:DurationSeconds": 300}`,
  valid JSON for IAM): numbers become strings, as IAM stores them;
- it checks DeleteObjects (`POST /?delete`) as s3:DeleteObject on the bucket's ARN, where AWS checks
  each key: a statement allowing s3:DeleteObject on objects of the bucket also allows it on the bucket
  ARN (only that action, only that bucket).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.exceptions import ClientError

#: Credentials of the sandbox's deployer: an AssumeRole into the stack's account while authorization is off
#: (moto keeps one backend per account; what the deployer creates lands in the stack's account).
DEPLOYER_ROLE = "sandbox-deployer"


def set_enforcement(moto_url: str, on: bool) -> None:
    # A form content type (urllib's default) would leave moto's request.data empty.
    request = urllib.request.Request(
        f"{moto_url}/moto-api/reset-auth",
        data=b"0" if on else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextmanager
def enforcement_off(moto_url: str) -> Iterator[None]:
    """Bootstrap window: requests are not checked inside, every request is checked after (also on error)."""
    set_enforcement(moto_url, False)
    try:
        yield
    finally:
        set_enforcement(moto_url, True)


def _stringify_numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, list):
        return [_stringify_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _stringify_numbers(v) for k, v in value.items()}
    return value


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def moto_policy(document: dict) -> dict:
    """The policy as moto can evaluate it (module docstring: the two quirks); the input is not modified."""
    statements = []
    for statement in _as_list(document.get("Statement", [])):
        statement = dict(statement)
        if "Condition" in statement:
            statement["Condition"] = _stringify_numbers(statement["Condition"])
        statements.append(statement)
        actions = _as_list(statement.get("Action", []))
        if statement.get("Effect") == "Allow" and "s3:DeleteObject" in actions:
            buckets = sorted(
                {r.split("/", 1)[0] for r in _as_list(statement.get("Resource", [])) if r.startswith("arn:aws:s3:::")}
            )
            statements.append(
                {
                    "Sid": (statement.get("Sid") or "Statement") + "MotoDeleteObjectsOnBucket",
                    "Effect": "Allow",
                    "Action": "s3:DeleteObject",
                    "Resource": buckets,
                }
            )
    return {**document, "Statement": statements}


def deployer_session(moto_url: str, region: str, account_id: str) -> boto3.Session:
    """Credentials in `account_id`'s moto backend (call while enforcement is off)."""
    sts = boto3.client(
        "sts",
        endpoint_url=moto_url,
        region_name=region,
        aws_access_key_id="sandbox-bootstrap",
        aws_secret_access_key="sandbox-bootstrap",
    )
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{DEPLOYER_ROLE}", RoleSessionName="sandbox-deployer"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )


def create_role(iam: Any, role: Any) -> None:
    """Create (or replace the policies of) one declared role: a `sandbox.plan.DeclaredRole`."""
    try:
        iam.create_role(
            RoleName=role.name,
            Path=role.path,
            AssumeRolePolicyDocument=json.dumps(moto_policy(json.loads(role.trust_policy))),
            MaxSessionDuration=role.max_session_seconds,
        )
    except ClientError as e:  # a session's moto already holds it (tests): same name, fresh policies
        if e.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        for name in iam.list_role_policies(RoleName=role.name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role.name, PolicyName=name)
    for name, document in role.inline_policies:
        iam.put_role_policy(
            RoleName=role.name, PolicyName=name, PolicyDocument=json.dumps(moto_policy(json.loads(document)))
        )


def provision(moto_url: str, plan: Any, bootstrap: Callable[[], Any]) -> Any:
    """Create the plan's declared roles, run `bootstrap()` (AssumeRole, bucket), then enforce; its result."""
    with enforcement_off(moto_url):
        iam = deployer_session(moto_url, plan.region, plan.account_id).client("iam", endpoint_url=moto_url)
        for role in plan.roles:
            create_role(iam, role)
        return bootstrap()
