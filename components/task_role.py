"""The worker's IAM task role: its prefix, its key via S3, and its web identity token."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import policies


@dataclass
class TaskRoleArgs:
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
        role = aws.iam.Role(
            f"{name}-task",
            # A fixed path keeps the ARN (the Entra subject) readable and predictable.
            path="/cosmos-s3-export/",
            assume_role_policy=json.dumps(policies.ecs_tasks_trust_policy(args.account_id, args.region)),
            description="Cosmos DB export worker (ECS task role)",
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(lambda key: json.dumps(policies.task_role_policy(
                bucket=args.bucket_name, prefix=args.export_prefix, kms_key_arn=key,
                region=args.region, max_token_seconds=args.max_token_seconds,
            ))),
            opts=child,
        )
        self.arn = role.arn
        self.name = role.name
        self.register_outputs({"arn": role.arn, "name": role.name})
