"""IAM / bucket / key policy documents, built by small pure functions.

Inputs are plain strings (already resolved ARNs), outputs are dicts ready for
`json.dumps`. Components call them inside `Output.all(...).apply(...)`; tests
call them directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cosmos_export import contract, layout

from . import operators_config

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
    return _doc(
        {
            "Sid": "EcsTasksOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:{region}:{account_id}:*"},
            },
        }
    )


def scheduler_trust_policy(account_id: str, region: str) -> Doc:
    """Only schedules of this account's default group in this region (confused deputy guard)."""
    return _doc(
        {
            "Sid": "EventBridgeSchedulerOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                # Scheduler sets aws:SourceArn to the schedule group's ARN.
                "ArnEquals": {"aws:SourceArn": f"arn:aws:scheduler:{region}:{account_id}:schedule-group/default"},
            },
        }
    )


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


def container_prefixes(*, prefix: str, account: str, database: str, containers: list[str]) -> list[str]:
    """Each exported container's key prefix ({prefix}/{account}/{db}/{container}, layout.py's rule)."""
    return [layout.ExportTarget("bucket", prefix, account, database, c).container_prefix for c in containers]


def restore_write_prefixes(*, prefix: str, account: str, database: str, containers: list[str]) -> list[str]:
    """The only keys the restore role may write: each exported container's drills/ and restores/ folders."""
    out = []
    for root in container_prefixes(prefix=prefix, account=account, database=database, containers=containers):
        out += [f"{root}/{contract.DRILLS_DIR}/", f"{root}/{contract.RESTORES_DIR}/"]
    return out


def restore_task_role_policy(
    *, bucket: str, prefix: str, write_prefixes: list[str], kms_key_arn: str, region: str, max_token_seconds: int
) -> Doc:
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


def scheduler_role_policy(
    *, task_definition_family_arns: list[str], cluster_arn: str, pass_role_arns: list[str], dlq_arn: str
) -> Doc:
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


def scheduler_fan_out_policy(*, state_machine_arn: str, dlq_arn: str) -> Doc:
    """With `fanOut`: the scheduler starts this state machine only (the machine runs the tasks, not it)."""
    return _doc(
        {"Sid": "StartFanOut", "Effect": "Allow", "Action": "states:StartExecution", "Resource": state_machine_arn},
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": dlq_arn},
    )


def states_trust_policy(account_id: str, region: str, state_machine_arn: str) -> Doc:
    """Only this state machine (and its Distributed Map's child executions) of this account."""
    return _doc(
        {
            "Sid": "ThisStateMachine",
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": [state_machine_arn, f"{state_machine_arn}/*"]},
            },
        }
    )


#: The EventBridge rule Step Functions manages in the account to learn when a `.sync` ECS task stops
#: (Step Functions developer guide, "IAM policies for Amazon ECS/AWS Fargate").
ECS_SYNC_RULE = "StepFunctionsGetEventsForECSTaskRule"


def fan_out_role_policy(
    *,
    region: str,
    account_id: str,
    family_arn: str,
    cluster_arn: str,
    cluster_name: str,
    pass_role_arns: list[str],
    bucket: str,
    prefix: str,
    kms_key_arn: str,
    state_machine_arn: str,
    distributed: bool,
) -> Doc:
    """The state machine's role: run this one task family in this cluster (any revision), pass exactly its
    two roles, watch and stop the tasks it starts, read the plan documents, and (Distributed Map) run its own
    child executions. Nothing else: no other family, no data in the bucket beyond the plans."""
    statements: list[Doc] = [
        {
            "Sid": "RunWorkerTask",
            "Effect": "Allow",
            "Action": "ecs:RunTask",
            "Resource": [family_arn, f"{family_arn}:*"],
            "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
        },
        {
            # `.sync` polls and, when the execution stops, stops the task: only tasks of this cluster.
            "Sid": "WatchWorkerTasks",
            "Effect": "Allow",
            "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
            "Resource": f"arn:aws:ecs:{region}:{account_id}:task/{cluster_name}/*",
            "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
        },
        {
            "Sid": "PassWorkerRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": sorted(pass_role_arns),
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        },
        {
            "Sid": "EcsTaskStateEvents",
            "Effect": "Allow",
            "Action": ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            "Resource": f"arn:aws:events:{region}:{account_id}:rule/{ECS_SYNC_RULE}",
        },
        {
            "Sid": "ReadFanOutPlans",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/{contract.fan_out_plan_key(prefix, '*')}",
        },
        {
            "Sid": "ExportKeyThroughS3Only",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
    ]
    if distributed:
        name = state_machine_arn.rsplit(":", 1)[1]
        statements += [
            {
                "Sid": "StartOwnChildExecutions",
                "Effect": "Allow",
                "Action": "states:StartExecution",
                "Resource": state_machine_arn,
            },
            {
                "Sid": "WatchOwnChildExecutions",
                "Effect": "Allow",
                "Action": ["states:DescribeExecution", "states:StopExecution"],
                "Resource": f"arn:aws:states:{region}:{account_id}:execution:{name}/*",
            },
        ]
    return _doc(*statements)


def _account_root(role_arn: str) -> str:
    partition, account = role_arn.split(":")[1], role_arn.split(":")[4]
    return f"arn:{partition}:iam::{account}:root"


def operator_trust_policy(principals: list[str]) -> Doc:
    """Only the listed role ARNs may assume the operator role; no wildcard, no account root without a condition.

    IAM Identity Center permission-set roles (aws-reserved/sso.amazonaws.com/...) are named by
    aws:PrincipalArn on their account root, the pattern Identity Center documents for them: a role named
    as Principal is stored by its unique id and silently stops matching when Identity Center recreates it.
    No MFA condition: AWS cannot see the IdP's MFA behind a permission-set session (require MFA in
    Identity Center), and sessions from AssumeRole carry no MFA information, so `aws:MultiFactorAuthPresent`
    would refuse every operator (IAM User Guide, "Configuring MFA-protected API access").
    """
    sso = sorted(p for p in principals if operators_config.is_sso_role(p))
    roles = sorted(p for p in principals if p not in sso)
    statements: list[Doc] = []
    if roles:
        statements.append(
            {
                "Sid": "ListedOperatorRoles",
                "Effect": "Allow",
                "Principal": {"AWS": roles},
                "Action": "sts:AssumeRole",
            }
        )
    for root in sorted({_account_root(p) for p in sso}):
        statements.append(
            {
                "Sid": f"IdentityCenterPermissionSetRoles{root.split(':')[4]}",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": "sts:AssumeRole",
                "Condition": {"ArnEquals": {"aws:PrincipalArn": [p for p in sso if _account_root(p) == root]}},
            }
        )
    return _doc(*statements)


@dataclass(frozen=True)
class OperatorScope:
    """The resources an operator role may act on (resolved ARNs); None where the stack has no such task."""

    region: str
    account_id: str
    cluster_arn: str
    cluster_name: str
    log_group_arn: str
    execution_role_arn: str
    #: The export task definition family's ARN (no revision) and the export task role.
    export_family_arn: str
    export_task_role_arn: str
    #: The restore/drill family and the restore task role (None without restore.enabled).
    restore_family_arn: str | None = None
    restore_task_role_arn: str | None = None
    #: For `status`: the bucket, the export prefix, each exported container's prefix, and the key.
    bucket: str = ""
    prefix: str = ""
    container_prefixes: tuple[str, ...] = ()
    kms_key_arn: str = ""


def _run_and_pass(sid: str, family_arn: str, cluster_arn: str, roles: list[str]) -> list[Doc]:
    return [
        {
            "Sid": f"Run{sid}Task",
            "Effect": "Allow",
            "Action": "ecs:RunTask",
            "Resource": [family_arn, f"{family_arn}:*"],
            "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
        },
        {
            # The limit of an operator: a run-task caller may override the command, never the roles.
            "Sid": f"Pass{sid}TaskRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": sorted(roles),
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        },
    ]


#: What `status` reads under each exported container's prefix (never data/ parts): layout.py's names.
STATE_KEYS = ("manifests/*", "checkpoint.json", f"{contract.DRILLS_DIR}/*")


def operator_role_policy(actions: frozenset[str] | set[str], s: OperatorScope) -> Doc:
    """Exactly what an operator of these actions may do (README "Who can move data").

    export: run the export task family in the stack's cluster, passing only its two roles. restore: the
    same for the restore/drill family and its roles. Either: describe and stop tasks of that cluster and
    read the worker's log group. status: list the export prefix and read each container's state
    (manifests, checkpoint, drill reports), never a data part; decrypt through S3 only.
    """
    statements: list[Doc] = []
    if "export" in actions:
        statements += _run_and_pass(
            "Export", s.export_family_arn, s.cluster_arn, [s.export_task_role_arn, s.execution_role_arn]
        )
    if "restore" in actions:
        if s.restore_family_arn is None or s.restore_task_role_arn is None:
            raise ValueError("a restore operator needs the stack's restore task (restore.enabled)")
        statements += _run_and_pass(
            "Restore", s.restore_family_arn, s.cluster_arn, [s.restore_task_role_arn, s.execution_role_arn]
        )
    if actions & {"export", "restore"}:
        statements += [
            {
                "Sid": "WatchAndStopTasksOfTheCluster",
                "Effect": "Allow",
                "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
                "Resource": f"arn:aws:ecs:{s.region}:{s.account_id}:task/{s.cluster_name}/*",
                "Condition": {"ArnEquals": {"ecs:cluster": s.cluster_arn}},
            },
            {
                "Sid": "ReadWorkerLogs",
                "Effect": "Allow",
                "Action": ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"],
                "Resource": [s.log_group_arn, f"{s.log_group_arn}:log-stream:*"],
            },
        ]
    if "status" in actions:
        statements += [
            {
                "Sid": "ListExportPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{s.bucket}",
                "Condition": {"StringLike": {"s3:prefix": [s.prefix, f"{s.prefix}/*"]}},
            },
            {
                # `status` counts open uploads of uncommitted runs; the action has no s3:prefix key.
                "Sid": "ListOpenUploads",
                "Effect": "Allow",
                "Action": "s3:ListBucketMultipartUploads",
                "Resource": f"arn:aws:s3:::{s.bucket}",
            },
            {
                "Sid": "ReadExportState",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [
                    f"arn:aws:s3:::{s.bucket}/{root}/{key}" for root in s.container_prefixes for key in STATE_KEYS
                ],
            },
            {
                "Sid": "ExportKeyThroughS3Only",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": s.kms_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{s.region}.amazonaws.com"}},
            },
        ]
    return _doc(*statements)


@dataclass(frozen=True)
class ExportAccess:
    """The IAM role ARNs allowed each kind of object access to the export bucket, and the key's use.

    Everyone else is denied by the bucket policy (whatever their IAM policies say) and gets no
    cryptographic use of the key. Adding a role (say a restore role) is one ARN in a list here.
    """

    #: s3:GetObject* and kms:Decrypt.
    read: tuple[str, ...] = ()
    #: s3:PutObject and kms:GenerateDataKey/Encrypt (and kms:Decrypt: multipart uploads need it).
    write: tuple[str, ...] = ()
    #: s3:DeleteObject* (a delete marker on the versioned bucket).
    delete: tuple[str, ...] = ()
    #: Analyst roles (components/analytics.py): the bucket policy lets them read only `analyst_read_prefixes`
    #: (the analytics tables) and Athena's results prefix, and write only the latter; never delete.
    analysts: tuple[str, ...] = ()
    analyst_read_prefixes: tuple[str, ...] = ()
    analyst_results_prefix: str | None = None

    def decrypt(self) -> list[str]:
        return sorted(set(self.read) | set(self.write) | set(self.analysts))

    def encrypt(self) -> list[str]:
        """Writers, and analysts: Athena writes their query results under SSE-KMS with the caller's identity."""
        return sorted(set(self.write) | set(self.analysts))


#: Object actions each access kind guards (what the bucket policy denies everyone else).
OBJECT_READ_ACTIONS = [
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectAttributes",
    "s3:GetObjectVersionAttributes",
    "s3:RestoreObject",
]
OBJECT_WRITE_ACTIONS = ["s3:PutObject"]
OBJECT_DELETE_ACTIONS = [
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectRetention",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
]


def _deny_all_but(sid: str, actions: list[str], resource: str, principals: list[str] | tuple[str, ...]) -> Doc:
    st: Doc = {"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": actions, "Resource": resource}
    if principals:  # no one listed: denied to everyone
        st["Condition"] = {"ArnNotEquals": {"aws:PrincipalArn": sorted(principals)}}
    return st


def _deny_insecure_transport(arn: str) -> Doc:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def bucket_policy(*, bucket: str, kms_key_arn: str, access: ExportAccess) -> Doc:
    """TLS only, puts only under the export key, object reads/writes/deletes only by the listed roles."""
    arn = f"arn:aws:s3:::{bucket}"
    return _doc(
        _deny_insecure_transport(arn),
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
        _deny_all_but("OnlyReadersReadObjects", OBJECT_READ_ACTIONS, f"{arn}/*", (*access.read, *access.analysts)),
        _deny_all_but("OnlyWritersWriteObjects", OBJECT_WRITE_ACTIONS, f"{arn}/*", (*access.write, *access.analysts)),
        *_analyst_fences(arn, access),
        # PutLifecycleConfiguration is a bucket action; expiring objects is deleting them.
        _deny_all_but(
            "OnlyDeletersDeleteObjects",
            [a for a in OBJECT_DELETE_ACTIONS if a != "s3:PutLifecycleConfiguration"],
            f"{arn}/*",
            access.delete,
        ),
    )


def _analyst_fences(arn: str, access: ExportAccess) -> list[Doc]:
    """Whatever an analyst role's IAM policy says: reads only of the tables and the query results, writes
    only of the query results (Athena writes them as the caller)."""
    if not access.analysts:
        return []
    results = f"{arn}/{access.analyst_results_prefix}/*"
    who = {"ArnEquals": {"aws:PrincipalArn": sorted(access.analysts)}}
    return [
        {
            "Sid": "AnalystsReadOnlyTables",
            "Effect": "Deny",
            "Principal": "*",
            "Action": OBJECT_READ_ACTIONS,
            "NotResource": [f"{arn}/{p}*" for p in access.analyst_read_prefixes] + [results],
            "Condition": who,
        },
        {
            "Sid": "AnalystsWriteOnlyQueryResults",
            "Effect": "Deny",
            "Principal": "*",
            "Action": OBJECT_WRITE_ACTIONS,
            "NotResource": results,
            "Condition": who,
        },
    ]


def audit_bucket_policy(*, bucket: str, trail_arn: str, trail_prefix: str) -> Doc:
    """CloudTrail writes the trail; nobody deletes it (lifecycle expiry and Object Lock still apply)."""
    arn = f"arn:aws:s3:::{bucket}"
    return _doc(
        _deny_insecure_transport(arn),
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
        _deny_all_but(
            "NobodyDeletesTheTrail",
            [a for a in OBJECT_DELETE_ACTIONS if a != "s3:PutLifecycleConfiguration"],
            f"{arn}/*",
            (),
        ),
    )


#: Key administration (through IAM: the deployer's policy grants it on the stack's keys); no
#: cryptographic action and no kms:CreateGrant (a grant would hand out decryption).
KEY_ADMIN_ACTIONS = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
]


def _key_admin(account_id: str) -> Doc:
    return {
        "Sid": "KeyAdministrationThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": KEY_ADMIN_ACTIONS,
        "Resource": "*",
    }


def _key_use(
    sid: str, account_id: str, region: str, actions: list[str], principals: list[str], context: dict | None = None
) -> Doc:
    """Use by the listed roles (their own IAM policy must allow it too), through S3 only."""
    condition: Doc = {
        "ArnEquals": {"aws:PrincipalArn": sorted(principals)},
        "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:CallerAccount": account_id},
    }
    if context:
        condition["StringLike"] = context
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": actions,
        "Resource": "*",
        "Condition": condition,
    }


def kms_key_policy(*, account_id: str, region: str, bucket: str, access: ExportAccess) -> Doc:
    """Administered through IAM; used (encrypt/decrypt) only by the listed roles, through S3, for this bucket."""
    # With S3 bucket keys the encryption context is the bucket ARN, without them the object's ARN.
    context = {"kms:EncryptionContext:aws:s3:arn": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}
    statements: list[Doc] = [_key_admin(account_id)]
    if access.decrypt():
        statements.append(
            _key_use("ReadersAndWritersDecrypt", account_id, region, ["kms:Decrypt"], access.decrypt(), context)
        )
    if access.encrypt():
        statements.append(
            _key_use(
                "WritersEncrypt",
                account_id,
                region,
                ["kms:Encrypt", "kms:GenerateDataKey"],
                access.encrypt(),
                context,
            )
        )
    return _doc(*statements)


def audit_key_policy(*, account_id: str, trail_arn: str, readers: tuple[str, ...] = ()) -> Doc:
    """CloudTrail encrypts this trail's logs (bound by source and encryption context); listed readers decrypt."""
    statements: list[Doc] = [
        _key_admin(account_id),
        {
            "Sid": "CloudTrailEncryptsThisTrail",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "kms:GenerateDataKey*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:SourceArn": trail_arn},
                "StringLike": {
                    "kms:EncryptionContext:aws:cloudtrail:arn": f"arn:aws:cloudtrail:*:{account_id}:trail/*"
                },
            },
        },
        {
            "Sid": "CloudTrailDescribesKey",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "kms:DescribeKey",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceArn": trail_arn}},
        },
    ]
    if readers:
        statements.append(
            {
                "Sid": "AuditReadersDecrypt",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "ArnEquals": {"aws:PrincipalArn": sorted(readers)},
                    "Null": {"kms:EncryptionContext:aws:cloudtrail:arn": "false"},
                },
            }
        )
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
