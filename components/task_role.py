"""The worker's IAM task role: its prefix, its key via S3, and its web identity token."""

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
            kind="task",
            trust=policies.ecs_tasks_trust_policy(args.account_id, args.region),
            description="Cosmos DB export worker (ECS task role)",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(
                lambda key: json.dumps(
                    policies.task_role_policy(
                        bucket=args.bucket_name,
                        prefix=args.export_prefix,
                        kms_key_arn=key,
                        region=args.region,
                        max_token_seconds=args.max_token_seconds,
                    )
                )
            ),
            opts=child,
        )
        self.arn = role.arn
        self.name = role.name
        self.register_outputs({"arn": role.arn, "name": role.name})
