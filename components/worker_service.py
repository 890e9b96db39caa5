"""The worker: image, execution role, logs, cluster, Fargate task definition, schedule with DLQ."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from . import naming, policies
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
) -> str:
    network = (
        f"awsvpcConfiguration={{subnets=[{','.join(subnets)}],securityGroups=[{security_group}],"
        f"assignPublicIp={'ENABLED' if assign_public_ip else 'DISABLED'}}}"
    )
    return " ".join(
        [
            "aws ecs run-task",
            f"--region {region}",
            f"--cluster {shlex.quote(cluster)}",
            "--launch-type FARGATE",
            f"--task-definition {shlex.quote(task_definition_arn)}",
            f"--network-configuration {shlex.quote(network)}",
        ]
    )


class WorkerService(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    task_definition_arn: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    run_task_command: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    task_family: str
    dlq_name: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]

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
        opts: pulumi.ResourceOptions | None = None,
    ):
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

        def container_definitions(v: list) -> str:
            image_ref, log_group_name, env = v
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
                        "environment": [{"name": k, "value": env[k]} for k in sorted(env)],
                        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
                        "logConfiguration": {
                            "logDriver": "awslogs",
                            "options": {
                                "awslogs-group": log_group_name,
                                "awslogs-region": region,
                                "awslogs-stream-prefix": "export",
                            },
                        },
                    }
                ]
            )

        task_definition = aws.ecs.TaskDefinition(
            f"{name}-task-definition",
            family=family,
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
                container_definitions
            ),
            opts=child,
        )

        dlq = aws.sqs.Queue(
            f"{name}-schedule-dlq", message_retention_seconds=14 * 24 * 3600, sqs_managed_sse_enabled=True, opts=child
        )
        scheduler_role = program_role(
            f"{name}-scheduler",
            account_id=account_id,
            stack=stack,
            kind="scheduler",
            trust=policies.scheduler_trust_policy(account_id, region),
            description="EventBridge Scheduler: run the export task",
            opts=child,
        )
        family_arn = f"arn:aws:ecs:{region}:{account_id}:task-definition/{family}"
        aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=scheduler_role.id,
            policy=pulumi.Output.all(cluster.arn, task_role_arn, execution_role.arn, dlq.arn).apply(
                lambda v: json.dumps(
                    policies.scheduler_role_policy(
                        task_definition_family_arn=family_arn,
                        cluster_arn=v[0],
                        pass_role_arns=[v[1], v[2]],
                        dlq_arn=v[3],
                    )
                )
            ),
            opts=child,
        )
        aws.scheduler.Schedule(
            f"{name}-schedule",
            schedule_expression=schedule.schedule,
            schedule_expression_timezone=schedule.schedule_time_zone,
            state="ENABLED" if schedule.schedule_enabled else "DISABLED",
            flexible_time_window={"mode": "OFF"},
            target={
                "arn": cluster.arn,
                "role_arn": scheduler_role.arn,
                "ecs_parameters": {
                    "task_definition_arn": task_definition.arn,
                    "launch_type": "FARGATE",
                    "task_count": 1,
                    "network_configuration": {
                        "subnets": a.subnet_ids,
                        "security_groups": [security_group.id],
                        "assign_public_ip": a.assign_public_ip,
                    },
                },
                "retry_policy": {
                    "maximum_retry_attempts": schedule.schedule_retry_attempts,
                    "maximum_event_age_in_seconds": schedule.schedule_max_event_age_seconds,
                },
                "dead_letter_config": {"arn": dlq.arn},
            },
            opts=child,
        )

        self.cluster_name = cluster.name
        self.task_definition_arn = task_definition.arn
        self.execution_role_arn = execution_role.arn
        self.image_ref = image.ref
        self.task_family = family
        self.dlq_name, self.dlq_arn = dlq.name, dlq.arn
        self.run_task_command = pulumi.Output.all(cluster.name, task_definition.arn, security_group.id).apply(
            lambda v: run_task_command(
                region=region,
                cluster=v[0],
                task_definition_arn=v[1],
                subnets=a.subnet_ids,
                security_group=v[2],
                assign_public_ip=a.assign_public_ip,
            )
        )
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "taskDefinitionArn": self.task_definition_arn,
                "executionRoleArn": self.execution_role_arn,
                "runTaskCommand": self.run_task_command,
            }
        )
