"""An ECS task role of the worker: its prefix, its key via S3, and its web identity token.

The export task role reads and writes the export prefix. The restore task role
(`write_prefixes` set) is a second, separate identity: it reads the export and
writes only drill reports and restore progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import naming, policies


def program_role(
    logical_name: str,
    *,
    account_id: str,
    stack: str,
    kind: str,
    trust: dict,
    description: str,
    opts: pulumi.ResourceOptions,
    max_session_duration: int = 3600,
) -> aws.iam.Role:
    """A role of this stack: fixed name, per-stack path, and the bootstrap's permissions boundary.

    The deployer may create and change roles only under /cosmos-s3-export/<stack>/ and only with the
    boundary attached (bootstrap/deployer.py); the fixed name makes the ARN (the Entra subject, and
    the principal the bucket and key policies allow) known before the role exists.
    """
    return aws.iam.Role(
        logical_name,
        name=naming.role_name(stack, kind),
        path=naming.role_path(stack),
        permissions_boundary=naming.boundary_arn(account_id, stack),
        assume_role_policy=json.dumps(trust),
        description=description,
        max_session_duration=max_session_duration,
        # A fixed name cannot exist twice: replace by deleting first.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True)),
    )


@dataclass
class TaskRoleArgs:
    stack: str
    account_id: str
    region: str
    bucket_name: str
    export_prefix: str
    kms_key_arn: pulumi.Input[str]
    max_token_seconds: int
    #: Restore role: the only key prefixes it may write (drills/, restores/). None: the export role.
    write_prefixes: list[str] | None = None
    description: str = "Cosmos DB export worker (ECS task role)"
    #: The fixed role name's suffix (naming.role_name): "task", or "restore-task" for the restore role.
    kind: str = "task"


class TaskRole(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, args: TaskRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:TaskRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = program_role(
            f"{name}-task",
            account_id=args.account_id,
            stack=args.stack,
            kind=args.kind,
            trust=policies.ecs_tasks_trust_policy(args.account_id, args.region),
            description=args.description,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(lambda key: json.dumps(self._policy(args, key))),
            opts=child,
        )
        self.arn = role.arn
        self.name = role.name
        self.register_outputs({"arn": role.arn, "name": role.name})

    @staticmethod
    def _policy(args: TaskRoleArgs, kms_key_arn: str) -> dict:
        if args.write_prefixes is None:
            return policies.task_role_policy(
                bucket=args.bucket_name,
                prefix=args.export_prefix,
                kms_key_arn=kms_key_arn,
                region=args.region,
                max_token_seconds=args.max_token_seconds,
            )
        return policies.restore_task_role_policy(
            bucket=args.bucket_name,
            prefix=args.export_prefix,
            write_prefixes=args.write_prefixes,
            kms_key_arn=kms_key_arn,
            region=args.region,
            max_token_seconds=args.max_token_seconds,
        )
