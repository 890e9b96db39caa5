"""Operator roles: who may start an export or a restore by hand, or read the state, and for how long.

One role per distinct action set in `operators` (`export-<stack>-operator-<actions>`), under the
stack's role path with the bootstrap's boundary, trusted by exactly the principals listed with that
set, with a maximum session of `operatorSessionMinutes`. Its one inline policy is
`policies.operator_role_policy`. A stack without `operators` declares none.
"""

from __future__ import annotations

import functools
import json
import shlex
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import policies
from .operators_config import OperatorsConfig, actions_of
from .task_role import program_role

#: Every operator principal is a role, so its session of the operator role is chained: one hour at most.
CHAINED_SESSION_SECONDS = 3600


def assume_role_step(role_arn: str, session_seconds: int) -> str:
    """The first line of every run command: become the operator role in this shell (POSIX sh)."""
    seconds = min(session_seconds, CHAINED_SESSION_SECONDS)
    assume = " ".join(
        [
            "aws sts assume-role",
            f"--role-arn {shlex.quote(role_arn)}",
            '--role-session-name "$(whoami)"',
            f"--duration-seconds {seconds}",
            "--query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]'",
            "--output text",
        ]
    )
    return f"export $(printf 'AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_SESSION_TOKEN=%s' $({assume}))"


@dataclass
class OperatorsArgs:
    stack: str
    account_id: str
    region: str
    config: OperatorsConfig
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    log_group_arn: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]
    export_family_arn: str
    export_task_role_arn: pulumi.Input[str]
    bucket: str
    prefix: str
    container_prefixes: list[str]
    kms_key_arn: pulumi.Input[str]
    restore_family_arn: str | None = None
    restore_task_role_arn: pulumi.Input[str] | None = None


class Operators(pulumi.ComponentResource):
    #: role kind (naming.role_name suffix) -> role ARN.
    role_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: OperatorsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:Operators", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role_arns = {}
        self._session_seconds = args.config.operator_session_minutes * 60
        for kind, principals in args.config.roles().items():
            actions = actions_of(kind)
            role = program_role(
                f"{name}-{kind}",
                account_id=args.account_id,
                stack=args.stack,
                kind=kind,
                trust=policies.operator_trust_policy(principals),
                description=f"Operators of {args.stack}: {', '.join(sorted(actions))} (README 'Who can move data')",
                max_session_duration=self._session_seconds,
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-{kind}-policy",
                role=role.id,
                policy=pulumi.Output.all(
                    args.cluster_arn,
                    args.cluster_name,
                    args.log_group_arn,
                    args.execution_role_arn,
                    args.export_task_role_arn,
                    args.restore_task_role_arn,
                    args.kms_key_arn,
                ).apply(functools.partial(self._policy, args, actions)),
                opts=child,
            )
            self.role_arns[kind] = role.arn
        self.register_outputs({"roleArns": self.role_arns})

    @staticmethod
    def _policy(args: OperatorsArgs, actions: frozenset[str], v: list) -> str:
        return json.dumps(
            policies.operator_role_policy(
                actions,
                policies.OperatorScope(
                    region=args.region,
                    account_id=args.account_id,
                    cluster_arn=v[0],
                    cluster_name=v[1],
                    log_group_arn=v[2],
                    execution_role_arn=v[3],
                    export_family_arn=args.export_family_arn,
                    export_task_role_arn=v[4],
                    restore_family_arn=args.restore_family_arn,
                    restore_task_role_arn=v[5],
                    bucket=args.bucket,
                    prefix=args.prefix,
                    container_prefixes=tuple(args.container_prefixes),
                    kms_key_arn=v[6],
                ),
            )
        )

    def role_for(self, action: str) -> pulumi.Output[str] | None:
        """The role a run command assumes for `action`: the one of exactly that action, else the first holding it."""
        kinds = sorted((k for k in self.role_arns if action in actions_of(k)), key=lambda k: (len(actions_of(k)), k))
        return self.role_arns[kinds[0]] if kinds else None

    def with_assume_step(self, action: str, command: pulumi.Input[str] | None) -> pulumi.Output[str]:
        """`command` preceded by the `aws sts assume-role` step of the operator role for `action` (if any)."""
        role = self.role_for(action)
        if role is None:
            return pulumi.Output.from_input(command or "")
        return pulumi.Output.all(role, command).apply(
            lambda v: f"{assume_role_step(v[0], self._session_seconds)}\n{v[1]}"
        )
