"""Fan-out with AWS Step Functions: one export run as a plan, N shard tasks and a commit (`fanOut`).

The state machine (its definition is `definition(...)`, a pure function tested without mocks):

    Plan      ecs:runTask.sync  `plan --mode <input mode> --shards N --execution <execution name>`
    ReadPlan  aws-sdk s3:getObject of the plan document `plan` wrote (contract.fan_out_plan_key)
    Shards    Map over the plan's shard numbers (Distributed above INLINE_MAP_MAX_SHARDS), at most
              maxConcurrency at once, each `run --run <run id> --shard K/N` (ecs:runTask.sync, retried)
    Commit    ecs:runTask.sync  `commit --run <run id>`

Every command is built by the contract's own function (cosmos_export/contract.py) called with
placeholders, which `command_expression` turns into Step Functions intrinsics (States.Array,
States.Format) over JSONPath: a state cannot drift from the command the worker parses. A failure
anywhere fails the execution (no Catch): the alarms on the state machine's ExecutionsFailed,
ExecutionsTimedOut and ExecutionsAborted (components/alerting.py) report it, and the ECS task-failed
rule reports the task itself, as for the single task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from cosmos_export import contract

from . import naming, policies
from .fan_out_config import FanOutConfig
from .task_role import program_role

Doc = dict[str, Any]

#: The state machine's role: export-<stack>-fan-out (naming.role_name); the bucket and key policies name it.
ROLE_KIND = "fan-out"

#: Placeholders the contract functions are called with; each becomes the JSONPath of its value.
MODE = "<<mode>>"
EXECUTION = "<<execution>>"
RUN_ID = "<<run_id>>"
SHARD = "<<shard>>"

#: Where the values sit in the state input: the schedule's input carries the mode; ReadPlan puts the
#: plan document under PLAN_PATH; a Map iteration gets {"run_id", "shard"} from the ItemSelector.
INPUT_MODE = "$.mode"
PLAN_PATH = "$.fanOutPlan"
PLAN_DOCUMENT = f"{PLAN_PATH}.document"

#: ECS task failures worth another try: the task stopped non-zero (States.TaskFailed), RunTask refused for
#: capacity (a non-empty `Failures`: AmazonECS.Unknown) or throttled (ECS.AmazonECSException).
TASK_RETRY: list[Doc] = [
    {
        "ErrorEquals": ["States.TaskFailed", "AmazonECS.Unknown", "ECS.AmazonECSException"],
        "IntervalSeconds": 60,
        "MaxAttempts": 2,
        "BackoffRate": 2.0,
        "JitterStrategy": "FULL",
    }
]


def _escape(text: str) -> str:
    """Text inside an intrinsic-function string literal: ' { } and \\ are escaped with a backslash."""
    return re.sub(r"([\\'{}])", r"\\\1", text)


def _literal(text: str) -> str:
    return f"'{_escape(text)}'"


def _argument(element: str, paths: dict[str, str]) -> str:
    """One command element as an intrinsic argument: a literal, a JSONPath, or States.Format of both."""
    pieces = [p for p in re.split("(" + "|".join(map(re.escape, paths)) + ")", element) if p]
    if pieces == [element] and element in paths:
        return paths[element]
    tokens = [p for p in pieces if p in paths]
    if not tokens:
        return _literal(element)
    template = "".join("{}" if p in paths else _escape(p) for p in pieces)
    return f"States.Format('{template}', {', '.join(paths[t] for t in tokens)})"


def command_expression(command: list[str], paths: dict[str, str]) -> str:
    """`command` (built with placeholders) as a States.Array expression: each placeholder its JSONPath."""
    unused = [p for p in paths if not any(p in element for element in command)]
    if unused:
        raise ValueError(f"placeholders {unused} are not in the command {command}: the contract changed")
    return "States.Array(" + ", ".join(_argument(element, paths) for element in command) + ")"


@dataclass(frozen=True)
class Network:
    subnets: list[str]
    security_groups: list[str]
    assign_public_ip: bool


@dataclass(frozen=True)
class EcsTarget:
    """What every ECS state runs: the export task definition (this revision) in the stack's cluster."""

    cluster_arn: str
    task_definition_arn: str
    container_name: str
    network: Network


def _ecs_task(target: EcsTarget, command: str, next_state: str | None) -> Doc:
    network = target.network
    state: Doc = {
        "Type": "Task",
        "Resource": "arn:aws:states:::ecs:runTask.sync",
        "Parameters": {
            "Cluster": target.cluster_arn,
            "TaskDefinition": target.task_definition_arn,
            "LaunchType": "FARGATE",
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "Subnets": network.subnets,
                    "SecurityGroups": network.security_groups,
                    "AssignPublicIp": "ENABLED" if network.assign_public_ip else "DISABLED",
                }
            },
            "Overrides": {"ContainerOverrides": [{"Name": target.container_name, "Command.$": command}]},
        },
        # The task's description is not needed downstream: keep the state's input as it was.
        "ResultPath": None,
        "Retry": TASK_RETRY,
    }
    if next_state:
        state["Next"] = next_state
    else:
        state["End"] = True
    return state


def definition(*, config: FanOutConfig, target: EcsTarget, bucket: str, prefix: str) -> Doc:
    """The state machine's Amazon States Language document (JSONPath query language)."""
    n = config.max_shards
    plan_key = contract.fan_out_plan_key(prefix, EXECUTION)
    shard_processor: Doc = {
        "StartAt": "Shard",
        "States": {
            "Shard": _ecs_task(
                target,
                command_expression(
                    contract.fan_out_shard_command(RUN_ID, SHARD, n), {RUN_ID: "$.run_id", SHARD: "$.shard"}
                ),
                next_state=None,
            )
        },
    }
    if config.distributed:
        shard_processor["ProcessorConfig"] = {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    else:
        shard_processor["ProcessorConfig"] = {"Mode": "INLINE"}
    shards: Doc = {
        "Type": "Map",
        "ItemsPath": f"{PLAN_DOCUMENT}.shards",
        "ItemSelector": {"run_id.$": f"{PLAN_DOCUMENT}.run_id", "shard.$": "$$.Map.Item.Value"},
        "MaxConcurrency": config.concurrency,
        "ItemProcessor": shard_processor,
        "ResultPath": None,
        "Next": "Commit",
    }
    if config.distributed:
        # ToleratedFailurePercentage stays at its default, 0: one failed shard fails the run (commit needs all).
        shards["Label"] = "Shards"
    return {
        "Comment": f"cosmos-export fan-out: plan, at most {n} shards, commit (components/fan_out.py)",
        "TimeoutSeconds": config.timeout_hours * 3600,
        "StartAt": "Plan",
        "States": {
            "Plan": _ecs_task(
                target,
                command_expression(
                    contract.fan_out_plan_command(MODE, n, EXECUTION),
                    {MODE: INPUT_MODE, EXECUTION: "$$.Execution.Name"},
                ),
                next_state="ReadPlan",
            ),
            "ReadPlan": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Parameters": {
                    "Bucket": bucket,
                    "Key.$": _argument(plan_key, {EXECUTION: "$$.Execution.Name"}),
                },
                "ResultSelector": {"document.$": "States.StringToJson($.Body)"},
                "ResultPath": PLAN_PATH,
                "Next": "Shards",
            },
            "Shards": shards,
            "Commit": _ecs_task(
                target,
                command_expression(contract.fan_out_commit_command(RUN_ID), {RUN_ID: f"{PLAN_DOCUMENT}.run_id"}),
                next_state=None,
            ),
        },
    }


def state_machine_name(component_name: str) -> str:
    """Fixed, so the role's policy and the scheduler's can name the machine before it exists."""
    return f"{component_name}-fan-out"


def state_machine_arn(*, region: str, account_id: str, name: str) -> str:
    return f"arn:aws:states:{region}:{account_id}:stateMachine:{name}"


def schedule_input(mode: str) -> str:
    """What a schedule passes to StartExecution: the mode `plan` runs (INPUT_MODE reads it)."""
    return json.dumps({"mode": mode})


@dataclass
class FanOutArgs:
    stack: str
    account_id: str
    region: str
    config: FanOutConfig
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    #: The export task definition (this revision is what every state runs) and its family ARN (no revision).
    task_definition_arn: pulumi.Input[str]
    family_arn: str
    container_name: str
    task_role_arn: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]
    subnets: list[str]
    assign_public_ip: bool
    security_group_id: pulumi.Input[str]
    bucket: str
    prefix: str
    kms_key_arn: pulumi.Input[str]


class FanOut(pulumi.ComponentResource):
    """The state machine and its role; `WorkerService` points the schedules at it."""

    state_machine_arn: str
    state_machine_name: str
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: FanOutArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:FanOut", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        machine_name = state_machine_name(name.removesuffix("-fan-out"))
        machine_arn = state_machine_arn(region=a.region, account_id=a.account_id, name=machine_name)
        role = program_role(
            f"{name}-role",
            account_id=a.account_id,
            stack=a.stack,
            kind=ROLE_KIND,
            trust=policies.states_trust_policy(a.account_id, a.region, machine_arn),
            description="Step Functions fan-out: run the export task's plan, shards and commit",
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=pulumi.Output.all(
                a.cluster_arn, a.cluster_name, a.task_role_arn, a.execution_role_arn, a.kms_key_arn
            ).apply(
                lambda v: json.dumps(
                    policies.fan_out_role_policy(
                        region=a.region,
                        account_id=a.account_id,
                        family_arn=a.family_arn,
                        cluster_arn=v[0],
                        cluster_name=v[1],
                        pass_role_arns=[v[2], v[3]],
                        bucket=a.bucket,
                        prefix=a.prefix,
                        kms_key_arn=v[4],
                        state_machine_arn=machine_arn,
                        distributed=a.config.distributed,
                    )
                )
            ),
            opts=child,
        )
        machine = aws.sfn.StateMachine(
            f"{name}-state-machine",
            name=machine_name,
            type="STANDARD",
            role_arn=role.arn,
            definition=pulumi.Output.all(a.cluster_arn, a.task_definition_arn, a.security_group_id).apply(
                lambda v: json.dumps(
                    definition(
                        config=a.config,
                        target=EcsTarget(
                            cluster_arn=v[0],
                            task_definition_arn=v[1],
                            container_name=a.container_name,
                            network=Network(a.subnets, [v[2]], a.assign_public_ip),
                        ),
                        bucket=a.bucket,
                        prefix=a.prefix,
                    )
                )
            ),
            tags={naming.STACK_TAG: a.stack},
            # The role's policy first: Step Functions checks the role when the machine is created.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.state_machine_arn = machine_arn
        self.state_machine_name = machine_name
        self.role_arn = role.arn
        self.register_outputs({"stateMachineArn": machine.arn, "roleArn": role.arn})
