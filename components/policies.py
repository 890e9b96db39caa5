"""IAM / bucket / key policy documents, built by small pure functions.

Inputs are plain strings (already resolved ARNs), outputs are dicts ready for
`json.dumps`. Components call them inside `Output.all(...).apply(...)`; tests
call them directly.
"""

from __future__ import annotations

import uuid
from typing import Any

from cosmos_export import contract, layout

Doc = dict[str, Any]

#: Namespace for deterministic Cosmos role assignment / definition GUIDs.
_GUID_NAMESPACE = uuid.UUID("6f1c1a52-3c1e-5b0e-9d55-0c05e2a9b7a1")


def deterministic_guid(*parts: str) -> str:
    """uuid5 of stable inputs: the same stack always gets the same GUID."""
    return str(uuid.uuid5(_GUID_NAMESPACE, "|".join(parts)))


def _doc(*statements: Doc) -> Doc:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def ecs_tasks_trust_policy(account_id: str, region: str) -> Doc:
    """Only ECS tasks of this account and region may assume the role (confused deputy guard)."""
    return _doc({
        "Sid": "EcsTasksOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account_id},
            "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:{region}:{account_id}:*"},
        },
    })


def scheduler_trust_policy(account_id: str) -> Doc:
    return _doc({
        "Sid": "EventBridgeSchedulerOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": "scheduler.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
    })


def task_role_policy(*, bucket: str, prefix: str, kms_key_arn: str, region: str, max_token_seconds: int) -> Doc:
    """What the worker may do: its prefix, its key (through S3 only), and mint its token."""
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*"
    return _doc(
        {
            "Sid": "ListExportPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        },
        {
            # Cleanup of uncommitted runs lists in-progress uploads. This action has no
            # s3:prefix condition key; it shows keys and upload ids, never content, and
            # aborting stays limited to the prefix below.
            "Sid": "ListExportMultipartUploads",
            "Effect": "Allow",
            "Action": "s3:ListBucketMultipartUploads",
            "Resource": f"arn:aws:s3:::{bucket}",
        },
        {
            "Sid": "ReadWriteExportObjects",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
                "s3:GetObjectTagging",
                "s3:PutObjectTagging",
                # The bucket is versioned: the worker tags, reads back and verifies the
                # exact version it wrote (VersionId), which IAM checks as *Version actions.
                "s3:GetObjectVersion",
                "s3:GetObjectVersionTagging",
                "s3:PutObjectVersionTagging",
                # Orphaned parts of uncommitted runs; never DeleteObjectVersion, so
                # with versioning/Object Lock this only adds a delete marker.
                "s3:DeleteObject",
            ],
            "Resource": objects,
        },
        {
            "Sid": "ExportKeyThroughS3Only",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
        _mint_token_statement(max_token_seconds),
    )


def _mint_token_statement(max_token_seconds: int) -> Doc:
    """The web identity token for Entra: one audience, bounded lifetime, RS256 only (export and restore roles)."""
    return {
        "Sid": "MintAzureFederationToken",
        "Effect": "Allow",
        "Action": "sts:GetWebIdentityToken",
        "Resource": "*",
        "Condition": {
            "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": [contract.TOKEN_EXCHANGE_AUDIENCE]},
            "NumericLessThanEquals": {"sts:DurationSeconds": max_token_seconds},
            "StringEquals": {"sts:SigningAlgorithm": contract.SIGNING_ALGORITHM},
        },
    }


def restore_write_prefixes(*, prefix: str, account: str, database: str, containers: list[str]) -> list[str]:
    """The only keys the restore role may write: each exported container's drills/ and restores/ folders."""
    out = []
    for container in containers:
        root = layout.ExportTarget("bucket", prefix, account, database, container).container_prefix
        out += [f"{root}/{contract.DRILLS_DIR}/", f"{root}/{contract.RESTORES_DIR}/"]
    return out


def restore_task_role_policy(*, bucket: str, prefix: str, write_prefixes: list[str], kms_key_arn: str,
                             region: str, max_token_seconds: int) -> Doc:
    """What the restore/drill task may do: read the export, write only drill reports and restore progress."""
    return _doc(
        {
            "Sid": "ListExportPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        },
        {
            "Sid": "ReadExportObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
        },
        {
            # Drill reports and restore checkpoints only; never data/, manifests/ or checkpoint.json, never a delete.
            "Sid": "WriteDrillReportsAndRestoreProgress",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in write_prefixes],
        },
        {
            "Sid": "ExportKeyThroughS3Only",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
        _mint_token_statement(max_token_seconds),
    )


def execution_role_policy(*, repository_arn: str, log_group_arn: str) -> Doc:
    """Pull the worker image and write its logs; nothing else."""
    return _doc(
        {"Sid": "EcrAuth", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Sid": "PullWorkerImage",
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": repository_arn,
        },
        {
            "Sid": "WriteWorkerLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group_arn}:log-stream:*",
        },
    )


def scheduler_role_policy(*, task_definition_family_arns: list[str], cluster_arn: str, pass_role_arns: list[str],
                          dlq_arn: str) -> Doc:
    """Run these task definitions (any revision) on this cluster, pass exactly their roles."""
    return _doc(
        {
            "Sid": "RunWorkerTask",
            "Effect": "Allow",
            "Action": "ecs:RunTask",
            "Resource": [arn for family in task_definition_family_arns for arn in (family, f"{family}:*")],
            "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
        },
        {
            "Sid": "PassWorkerRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": sorted(pass_role_arns),
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        },
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": dlq_arn},
    )


def bucket_policy(*, bucket: str, kms_key_arn: str, trail_arn: str | None = None, trail_prefix: str | None = None) -> Doc:
    """Deny anything without TLS and any put not encrypted under the export key."""
    arn = f"arn:aws:s3:::{bucket}"
    statements: list[Doc] = [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        # UploadPart requests never carry SSE headers, so the header is only
        # judged when present; default encryption puts header-less writes
        # under the export key anyway. Another key or SSE-S3 is refused.
        {
            "Sid": "DenyPutWithOtherKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{arn}/*",
            "Condition": {
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": kms_key_arn},
                "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
            },
        },
        {
            "Sid": "DenyPutNotKms",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{arn}/*",
            "Condition": {
                "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                "Null": {"s3:x-amz-server-side-encryption": "false"},
            },
        },
    ]
    if trail_arn and trail_prefix:
        statements += [
            {
                "Sid": "CloudTrailAclCheck",
                "Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"},
                "Action": "s3:GetBucketAcl",
                "Resource": arn,
                "Condition": {"StringEquals": {"aws:SourceArn": trail_arn}},
            },
            {
                "Sid": "CloudTrailWrite",
                "Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": f"{arn}/{trail_prefix}/*",
                "Condition": {"StringEquals": {"aws:SourceArn": trail_arn, "s3:x-amz-acl": "bucket-owner-full-control"}},
            },
        ]
    return _doc(*statements)


def kms_key_policy(*, account_id: str, trail_arn: str | None = None) -> Doc:
    """Account admins manage the key (IAM policies grant use); CloudTrail may encrypt its own logs."""
    statements: list[Doc] = [{
        "Sid": "AccountAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }]
    if trail_arn:
        statements.append({
            "Sid": "CloudTrailEncryptsLogs",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": ["kms:GenerateDataKey*", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceArn": trail_arn}},
        })
    return _doc(*statements)


def cosmos_scopes(account_id: str, database: str, containers: list[str], level: str) -> list[str]:
    """Fully-qualified assignment scopes: one per container, or the database once."""
    if level == "database":
        return [f"{account_id}/dbs/{database}"]
    return [f"{account_id}/dbs/{database}/colls/{c}" for c in containers]


def write_actions(actions: list[str]) -> list[str]:
    """Data actions that could change data (anything but read / query / change feed / metadata)."""
    allowed = set(contract.COSMOS_DATA_ACTIONS)
    return [a for a in actions if a not in allowed]
