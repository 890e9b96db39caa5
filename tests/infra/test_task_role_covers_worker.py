"""The task role grants every S3 call the worker's code makes, on the resource IAM checks it against.

moto enforces the role's actions and resources in the sandbox and the e2e tests
(sandbox/iam.py), but not its conditions, KMS or the *VersionTagging actions, and only
for the calls a test happens to make. This test reads the worker's source (runtime/src/cosmos_export), finds every S3
client call, maps it to the IAM action(s) AWS authorises it with, and asks the
deployed policy document of every stack whether they are allowed.
"""

from __future__ import annotations

import ast
import fnmatch

import boto3
import botocore

from sandbox.mocked_stack import REPO

WORKER_SRC = REPO / "runtime" / "src" / "cosmos_export"

#: boto3 operation -> IAM action, where the names differ (S3 authorisation reference).
_ACTION = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "HeadObject": "s3:GetObject",
    "UploadPart": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObjects": "s3:DeleteObject",
}
#: With a VersionId, IAM checks the version variant instead.
_VERSIONED = {
    "s3:GetObject": "s3:GetObjectVersion",
    "s3:GetObjectTagging": "s3:GetObjectVersionTagging",
    "s3:PutObjectTagging": "s3:PutObjectVersionTagging",
    "s3:DeleteObject": "s3:DeleteObjectVersion",
}
_BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"}


def _operations() -> dict[str, str]:
    model = boto3.client("s3", region_name="us-east-1").meta.service_model
    return {botocore.xform_name(op): op for op in model.operation_names}


def worker_s3_calls() -> set[tuple[str, bool, str]]:
    """{(operation, may pass VersionId, where)} for every S3 client call in the worker."""
    ops = _operations()
    found = set()
    for path in sorted(WORKER_SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                name = str(node.args[0].value)
            if name not in ops:
                continue
            # `**kwargs` may carry a VersionId: count it as versioned (the stricter reading).
            versioned = any(k.arg in (None, "VersionId") for k in node.keywords)
            found.add((ops[name], versioned, f"{path.relative_to(REPO)}:{node.lineno}"))
    return found


def needed_actions(operation: str, versioned: bool) -> set[str]:
    action = _ACTION.get(operation, f"s3:{operation}")
    actions = {action}
    if versioned and action in _VERSIONED:
        actions.add(_VERSIONED[action])
    return actions


def allowed(document: dict, action: str, resource: str) -> bool:
    for st in document["Statement"]:
        if st["Effect"] != "Allow":
            continue
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


def test_the_scan_finds_the_worker_s3_calls():
    ops = {op for op, _, _ in worker_s3_calls()}
    # The export's own path: if the scan stopped finding these, the test below would prove nothing.
    assert {
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObject",
        "GetObject",
        "ListObjectsV2",
        "PutObjectTagging",
        "AbortMultipartUpload",
    } <= ops
    assert ("HeadObject", True) in {(op, v) for op, v, _ in worker_s3_calls()}


def test_every_worker_s3_call_is_allowed_by_the_task_role(every_stack):
    document = every_stack.task_role_policy()
    bucket, prefix = every_stack.bucket, every_stack.prefix
    missing = []
    for operation, versioned, where in sorted(worker_s3_calls()):
        for action in sorted(needed_actions(operation, versioned)):
            resource = (
                f"arn:aws:s3:::{bucket}"
                if action in _BUCKET_LEVEL
                else f"arn:aws:s3:::{bucket}/{prefix}/x/part-1.jsonl.zst"
            )
            if not allowed(document, action, resource):
                missing.append(f"{where} {operation} needs {action} on {resource}")
    assert missing == []


def test_the_check_would_catch_a_missing_grant(dev):
    document = dev.task_role_policy()
    for st in document["Statement"]:
        if isinstance(st["Action"], list) and "s3:GetObjectVersion" in st["Action"]:
            st["Action"] = [a for a in st["Action"] if a != "s3:GetObjectVersion"]
    assert not allowed(document, "s3:GetObjectVersion", f"arn:aws:s3:::{dev.bucket}/{dev.prefix}/x")
    assert allowed(document, "s3:GetObject", f"arn:aws:s3:::{dev.bucket}/{dev.prefix}/x")
    assert not allowed(document, "s3:GetObject", f"arn:aws:s3:::{dev.bucket}/elsewhere/x")
