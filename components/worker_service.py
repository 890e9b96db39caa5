"""The worker: image, execution role, logs, cluster, Fargate task definitions, schedules with DLQ.

One image, one cluster, one execution role. The export task definition runs
`run --mode <exportMode>` on `schedule` (and, with `snapshot_schedule`, a
second task definition runs `run --mode snapshot`). With `restore` set, a
restore task definition runs `drill` as the separate restore task role, on its
own schedule whose scheduler role may pass only that role.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from . import fan_out, naming, policies
from .config import ScheduleConfig, WorkerConfig
from .task_role import program_role

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"
CONTAINER_NAME = "worker"
#: Unprivileged uid:gid the worker runs as (the image's own user).
WORKER_USER = "10001:10001"


def source_tag(root: Path = RUNTIME_DIR) -> str:
    """Content hash of the worker sources: ECR tags are immutable, so a new build needs a new tag."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part in ("__pycache__", ".pytest_cache") or part.endswith(".egg-info") for part in rel.split("/")):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return "src-" + digest.hexdigest()[:16]


def run_task_command(
    *,
    region: str,
    cluster: str,
    task_definition_arn: str,
    subnets: list[str],
    security_group: str,
    assign_public_ip: bool,
    command: list[str] | None = None,
) -> str:
    """The `aws ecs run-task` line; `command` overrides the container's command (a restore's arguments)."""
    network = (
        f"awsvpcConfiguration={{subnets=[{','.join(subnets)}],securityGroups=[{security_group}],"
        f"assignPublicIp={'ENABLED' if assign_public_ip else 'DISABLED'}}}"
    )
    parts = [
        "aws ecs run-task",
        f"--region {region}",
        f"--cluster {shlex.quote(cluster)}",
        "--launch-type FARGATE",
        f"--task-definition {shlex.quote(task_definition_arn)}",
        f"--network-configuration {shlex.quote(network)}",
    ]
    if command is not None:
        parts.append(f"--overrides {shlex.quote(json.dumps(task_override(command), separators=(',', ':')))}")
    return " ".join(parts)


def container_definitions(
    *, image_ref: str, log_group: str, region: str, environment: dict[str, str], command: list[str], stream_prefix: str
) -> str:
    """The one container of every task definition: same image and hardening, its own command and environment."""
    return json.dumps(
        [
            {
                "name": CONTAINER_NAME,
                "image": image_ref,
                "essential": True,
                "command": command,
                "user": WORKER_USER,
                "readonlyRootFilesystem": True,
                # The only writable path: spill space for multipart buffers.
                "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
                "environment": [{"name": k, "value": environment[k]} for k in sorted(environment)],
                "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": stream_prefix,
                    },
                },
            }
        ]
    )


#: What `runRestoreCommand` runs: the worker's restore, with the name to fill in shown as <...>
#: (the target container defaults to the stack's restore target of that source).
RESTORE_COMMAND_TEMPLATE = ["restore", "-c", "<SOURCE_CONTAINER>"]
DRILL_COMMAND = ["drill"]


def drill_command(source: str) -> list[str]:
    return [*DRILL_COMMAND, "-c", source]


def task_override(command: list[str]) -> dict:
    """ECS TaskOverride replacing the worker container's command (RunTask `overrides`, a scheduler's `input`)."""
    return {"containerOverrides": [{"name": CONTAINER_NAME, "command": command}]}


@dataclass
class RestoreTaskArgs:
    """The restore task: the same image as the restore task role, running `drill` by default."""

    task_role_arn: pulumi.Input[str]
    environment: dict[str, pulumi.Input[str]]
    #: The exported containers: `drill` takes one (`-c`), so each gets its own scheduled drill.
    sources: list[str]
    drill_schedule: str | None = None


@dataclass
class ExportLocation:
    """Where the export lands: the fan-out's state machine reads its plan documents there."""

    bucket: str
    prefix: str
    kms_key_arn: pulumi.Input[str]


class WorkerService(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    cluster_arn: pulumi.Output[str]
    log_group_arn: pulumi.Output[str]
    #: Task definition family ARNs (no revision): what a scheduler or an operator may run.
    export_family_arn: str
    restore_family_arn: str | None = None
    task_definition_arn: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    run_task_command: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    task_families: list[str]
    dlq_name: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]
    restore_task_definition_arn: pulumi.Output[str] | None = None
    run_restore_command: pulumi.Output[str] | None = None
    run_drill_command: pulumi.Output[str] | None = None
    #: With `fanOut`: the state machine the schedules start instead of the task.
    state_machine: fan_out.FanOut | None = None

    def __init__(
        self,
        name: str,
        args: WorkerConfig,
        schedule: ScheduleConfig,
        *,
        stack: str,
        account_id: str,
        region: str,
        task_role_arn: pulumi.Input[str],
        environment: dict[str, pulumi.Input[str]],
        restore: RestoreTaskArgs | None = None,
        export_location: ExportLocation | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`schedule.snapshot_schedule` adds the scheduled full snapshots; `restore` the restore task;
        `schedule.fan_out` the state machine (it reads its plans at `export_location`)."""
        super().__init__("cosmos-s3-export:aws:WorkerService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        command = ["run", "--mode", a.export_mode]
        family = name

        repo = aws.ecr.Repository(
            f"{name}-repo",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "KMS"}],
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=a.log_retention_days, opts=child)

        platform = docker_build.Platform.LINUX_ARM64 if a.architecture == "ARM64" else docker_build.Platform.LINUX_AMD64
        auth = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker_build.Image(
            f"{name}-image",
            context={"location": str(RUNTIME_DIR)},
            dockerfile={"location": str(RUNTIME_DIR / "Dockerfile")},
            platforms=[platform],
            push=True,
            tags=[repo.repository_url.apply(lambda url: f"{url}:{source_tag()}")],
            registries=[{"address": repo.repository_url, "username": auth.user_name, "password": auth.password}],
            opts=child,
        )

        execution_role = program_role(
            f"{name}-execution",
            account_id=account_id,
            stack=stack,
            kind="execution",
            trust=policies.ecs_tasks_trust_policy(account_id, region),
            description="Cosmos DB export worker (ECS execution role: pull image, write logs)",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution_role.id,
            policy=pulumi.Output.all(repo.arn, log_group.arn).apply(
                lambda v: json.dumps(policies.execution_role_policy(repository_arn=v[0], log_group_arn=v[1]))
            ),
            opts=child,
        )

        cluster = aws.ecs.Cluster(
            f"{name}-cluster", settings=[{"name": "containerInsights", "value": "enabled"}], opts=child
        )
        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=a.vpc_id,
            description="Cosmos DB export worker: no ingress, HTTPS out (STS, S3, Entra, Cosmos DB)",
            tags={naming.STACK_TAG: stack},  # the deployer manages only security groups with its stack's tag
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "HTTPS",
                }
            ],
            opts=child,
        )

        def declare_task_definition(
            suffix: str, task_role_arn: pulumi.Input[str], environment: dict, command: list[str], stream_prefix: str
        ) -> aws.ecs.TaskDefinition:
            return aws.ecs.TaskDefinition(
                f"{name}{suffix}-task-definition",
                family=f"{family}{suffix}",
                requires_compatibilities=["FARGATE"],
                network_mode="awsvpc",
                cpu=str(a.cpu),
                memory=str(a.memory),
                runtime_platform={"cpu_architecture": a.architecture, "operating_system_family": "LINUX"},
                task_role_arn=task_role_arn,
                execution_role_arn=execution_role.arn,
                volumes=[{"name": "tmp"}],
                tags={naming.STACK_TAG: stack},  # the deployer registers only task definitions with its stack's tag
                container_definitions=pulumi.Output.all(image.ref, log_group.name, environment).apply(
                    lambda v: container_definitions(
                        image_ref=v[0],
                        log_group=v[1],
                        region=region,
                        environment=v[2],
                        command=command,
                        stream_prefix=stream_prefix,
                    )
                ),
                opts=child,
            )

        task_definition = declare_task_definition("", task_role_arn, environment, command, "export")
        snapshot_definition = (
            declare_task_definition("-snapshot", task_role_arn, environment, ["run", "--mode", "snapshot"], "export")
            if schedule.snapshot_schedule
            else None
        )
        restore_definition = (
            declare_task_definition("-restore", restore.task_role_arn, restore.environment, DRILL_COMMAND, "restore")
            if restore
            else None
        )

        dlq = aws.sqs.Queue(
            f"{name}-schedule-dlq", message_retention_seconds=14 * 24 * 3600, sqs_managed_sse_enabled=True, opts=child
        )

        def family_arn(suffix: str) -> str:
            return f"arn:aws:ecs:{region}:{account_id}:task-definition/{family}{suffix}"

        machine: fan_out.FanOut | None = None
        if schedule.fan_out is not None:
            if export_location is None:
                raise ValueError("WorkerService: schedule.fan_out needs export_location (where the plans are)")
            machine = fan_out.FanOut(
                f"{name}-fan-out",
                fan_out.FanOutArgs(
                    stack=stack,
                    account_id=account_id,
                    region=region,
                    config=schedule.fan_out,
                    cluster_arn=cluster.arn,
                    cluster_name=cluster.name,
                    task_definition_arn=task_definition.arn,
                    family_arn=family_arn(""),
                    container_name=CONTAINER_NAME,
                    task_role_arn=task_role_arn,
                    execution_role_arn=execution_role.arn,
                    subnets=a.subnet_ids,
                    assign_public_ip=a.assign_public_ip,
                    security_group_id=security_group.id,
                    bucket=export_location.bucket,
                    prefix=export_location.prefix,
                    kms_key_arn=export_location.kms_key_arn,
                ),
                opts=child,
            )

        def scheduler(
            suffix: str,
            what: str,
            families: list[str],
            task_role_arn: pulumi.Input[str],
            machine: fan_out.FanOut | None = None,
        ) -> aws.iam.Role:
            """A scheduler role that may run only these families and pass only their task role, or (fan-out)
            start only the state machine."""
            role = program_role(
                f"{name}{suffix}-scheduler",
                account_id=account_id,
                stack=stack,
                kind=f"{suffix.lstrip('-')}-scheduler" if suffix else "scheduler",
                trust=policies.scheduler_trust_policy(account_id, region),
                description=(
                    "EventBridge Scheduler: start the fan-out state machine"
                    if machine is not None
                    else f"EventBridge Scheduler: run the {what} task"
                ),
                opts=child,
            )
            if machine is not None:
                aws.iam.RolePolicy(
                    f"{name}{suffix}-scheduler-policy",
                    role=role.id,
                    policy=dlq.arn.apply(
                        lambda dlq_arn: json.dumps(
                            policies.scheduler_fan_out_policy(
                                state_machine_arn=machine.state_machine_arn, dlq_arn=dlq_arn
                            )
                        )
                    ),
                    opts=child,
                )
                return role
            aws.iam.RolePolicy(
                f"{name}{suffix}-scheduler-policy",
                role=role.id,
                policy=pulumi.Output.all(cluster.arn, task_role_arn, execution_role.arn, dlq.arn).apply(
                    lambda v: json.dumps(
                        policies.scheduler_role_policy(
                            task_definition_family_arns=families,
                            cluster_arn=v[0],
                            pass_role_arns=[v[1], v[2]],
                            dlq_arn=v[3],
                        )
                    )
                ),
                opts=child,
            )
            return role

        def declare_schedule(
            logical: str,
            expression: str,
            role: aws.iam.Role,
            definition: aws.ecs.TaskDefinition,
            enabled: bool,
            command: list[str] | None = None,
            fan_out_mode: str | None = None,
        ) -> None:
            retry_and_dlq = {
                "retry_policy": {
                    "maximum_retry_attempts": schedule.schedule_retry_attempts,
                    "maximum_event_age_in_seconds": schedule.schedule_max_event_age_seconds,
                },
                "dead_letter_config": {"arn": dlq.arn},
            }
            if machine is not None and fan_out_mode is not None:
                # A templated Step Functions target: StartExecution with `input` (the mode `plan` runs).
                target: dict = {
                    "arn": machine.state_machine_arn,
                    "role_arn": role.arn,
                    "input": fan_out.schedule_input(fan_out_mode),
                }
            else:
                # A templated ECS target turns `input` into the RunTask TaskOverride: here, the container's command.
                target = {
                    "arn": cluster.arn,
                    "role_arn": role.arn,
                    **({"input": json.dumps(task_override(command))} if command else {}),
                    "ecs_parameters": {
                        "task_definition_arn": definition.arn,
                        "launch_type": "FARGATE",
                        "task_count": 1,
                        "network_configuration": {
                            "subnets": a.subnet_ids,
                            "security_groups": [security_group.id],
                            "assign_public_ip": a.assign_public_ip,
                        },
                    },
                }
            aws.scheduler.Schedule(
                logical,
                schedule_expression=expression,
                schedule_expression_timezone=schedule.schedule_time_zone,
                state="ENABLED" if enabled else "DISABLED",
                flexible_time_window={"mode": "OFF"},
                target={**target, **retry_and_dlq},
                opts=child,
            )

        export_families = [family_arn("")] + ([family_arn("-snapshot")] if snapshot_definition else [])
        scheduler_role = scheduler("", "export", export_families, task_role_arn, machine)
        declare_schedule(
            f"{name}-schedule",
            schedule.schedule,
            scheduler_role,
            task_definition,
            schedule.schedule_enabled,
            fan_out_mode=a.export_mode,
        )
        if snapshot_definition is not None and schedule.snapshot_schedule:
            declare_schedule(
                f"{name}-snapshot-schedule",
                schedule.snapshot_schedule,
                scheduler_role,
                snapshot_definition,
                schedule.schedule_enabled,
                fan_out_mode="snapshot",
            )
        if restore_definition is not None and restore and restore.drill_schedule:
            restore_scheduler = scheduler("-restore", "restore drill", [family_arn("-restore")], restore.task_role_arn)
            for source in restore.sources:
                declare_schedule(
                    f"{name}-drill-schedule-{source}",
                    restore.drill_schedule,
                    restore_scheduler,
                    restore_definition,
                    True,
                    command=drill_command(source),
                )

        def run_command(definition: aws.ecs.TaskDefinition, command: list[str] | None = None) -> pulumi.Output[str]:
            return pulumi.Output.all(cluster.name, definition.arn, security_group.id).apply(
                lambda v: run_task_command(
                    region=region,
                    cluster=v[0],
                    task_definition_arn=v[1],
                    subnets=a.subnet_ids,
                    security_group=v[2],
                    assign_public_ip=a.assign_public_ip,
                    command=command,
                )
            )

        if restore_definition is not None:
            self.restore_task_definition_arn = restore_definition.arn
            self.run_restore_command = run_command(restore_definition, RESTORE_COMMAND_TEMPLATE)
            self.run_drill_command = run_command(restore_definition, drill_command("<SOURCE_CONTAINER>"))
        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.log_group_arn = log_group.arn
        self.export_family_arn = family_arn("")
        self.restore_family_arn = family_arn("-restore") if restore_definition is not None else None
        self.task_definition_arn = task_definition.arn
        self.execution_role_arn = execution_role.arn
        self.image_ref = image.ref
        #: Every task family this stack runs (export, snapshot, restore/drill): the task-failed rule watches them all.
        self.task_families = (
            [family]
            + ([f"{family}-snapshot"] if snapshot_definition is not None else [])
            + ([f"{family}-restore"] if restore_definition is not None else [])
        )
        self.dlq_name, self.dlq_arn = dlq.name, dlq.arn
        self.state_machine = machine
        self.run_task_command = run_command(task_definition)
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "taskDefinitionArn": self.task_definition_arn,
                "executionRoleArn": self.execution_role_arn,
                "runTaskCommand": self.run_task_command,
                **(
                    {
                        "restoreTaskDefinitionArn": self.restore_task_definition_arn,
                        "runRestoreCommand": self.run_restore_command,
                        "runDrillCommand": self.run_drill_command,
                    }
                    if self.restore_task_definition_arn is not None
                    else {}
                ),
            }
        )
