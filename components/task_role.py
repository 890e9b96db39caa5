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

from . import policies


@dataclass
class TaskRoleArgs:
    account_id: str
    region: str
    bucket_name: str
    export_prefix: str
    kms_key_arn: pulumi.Input[str]
    max_token_seconds: int
    #: Restore role: the only key prefixes it may write (drills/, restores/). None: the export role.
    write_prefixes: list[str] | None = None
    description: str = "Cosmos DB export worker (ECS task role)"


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
            description=args.description,
            max_session_duration=3600,
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
            return policies.task_role_policy(bucket=args.bucket_name, prefix=args.export_prefix, kms_key_arn=kms_key_arn,
                                             region=args.region, max_token_seconds=args.max_token_seconds)
        return policies.restore_task_role_policy(
            bucket=args.bucket_name, prefix=args.export_prefix, write_prefixes=args.write_prefixes,
            kms_key_arn=kms_key_arn, region=args.region, max_token_seconds=args.max_token_seconds)
