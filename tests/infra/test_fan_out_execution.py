"""The fan-out state machine, as the program renders it, executed by moto's Step Functions interpreter.

moto (in process, `execute_state_machine`) evaluates the real definition: the intrinsics that build each
command, the S3 getObject of the plan document, the Map (inline and Distributed) and its retries. Its ECS
runs nothing, so each RunTask's container command goes to `worker` below (tests/infra/moto_sfn.py says what
was added to moto and why), which plays the worker's side of the contract: `plan` writes the plan
document where contract.fan_out_plan_key says, after the worker's real CLI has parsed each command down to
the fan-out function it calls (cosmos_export/fanout.py; those functions are tested against the doubles in
tests/reliability/test_fan_out*.py). What is asserted is the state machine's side: every ECS
state ran exactly the contract function's command with the execution's real values, in order, and a
failure stops the run before `commit`. About a second per execution.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Final

import boto3
import pytest
from moto import mock_aws

from components import fan_out
from components.fan_out_config import FanOutConfig
from cosmos_export import contract
from tests.infra.moto_sfn import EcsRunner

REGION: Final = "eu-west-1"
BUCKET = "acme-fan-out-test"
#: Parentheses and the rest of an export prefix's characters pass through the plan key's States.Format.
PREFIX = "exports/orders(1)"
RUN_ID = "20261203T090000Z-7f3a0b1c"


PARSING = threading.Lock()


@dataclass
class Worker:
    """The worker's side: `plan` writes this plan document; commands in `failing` exit 1."""

    shards: list[int]
    failing: set[str] = field(default_factory=set)

    #: What the worker's real CLI parsed each command into: (command, its arguments).
    parsed: list[tuple] = field(default_factory=list)

    def __call__(self, command: list[str]) -> int:
        self.parse(command)
        if command[0] == "plan":
            execution = command[command.index("--execution") + 1]
            boto3.client("s3", region_name=REGION).put_object(
                Bucket=BUCKET,
                Key=contract.fan_out_plan_key(PREFIX, execution),
                Body=json.dumps({"run_id": RUN_ID, "shards": self.shards}).encode(),
            )
        return 1 if " ".join(command) in self.failing else 0

    def parse(self, command: list[str]) -> None:
        """The worker's own CLI (typer) parses the command the state machine sent, down to the fan-out
        function it calls: a state whose argv the worker would refuse fails here."""
        from types import SimpleNamespace
        from unittest import mock

        from typer.testing import CliRunner

        from cosmos_export import fanout
        from cosmos_export.cli import app

        def plan(settings, *args, **_):
            self.parsed.append(("plan", *args))
            return {}

        def shard(settings, run_id, spec, **_):
            fanout._check_run_id(run_id)
            self.parsed.append(("run", run_id, fanout.parse_shard(spec)))

        # The Map runs iterations in threads; patching is process-wide, so one command at a time.
        with (
            PARSING,
            mock.patch("cosmos_export.cli._settings", lambda **_: SimpleNamespace(log_level="WARNING")),
            # Signal handlers install only in the main thread; the Map's iterations run in others.
            mock.patch("cosmos_export.cli._stop_on_signals", lambda: nullcontext((threading.Event(), []))),
            mock.patch.object(fanout, "plan_fan_out", plan),
            mock.patch.object(fanout, "run_shard", shard),
            mock.patch.object(fanout, "commit_fan_out", lambda s, *a, **_: self.parsed.append(("commit", *a))),
        ):
            result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, f"the worker refused {command}: {result.output}"


@dataclass
class Aws:
    cluster_arn: str
    task_definition_arn: str
    network: fan_out.Network


@pytest.fixture
def aws(monkeypatch) -> Iterator[Aws]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto's awsvpc tasks need it
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="worker", Description="worker", VpcId=vpc)["GroupId"]
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        ecs = boto3.client("ecs", region_name=REGION)
        cluster = ecs.create_cluster(clusterName="export-test-cluster")["cluster"]["clusterArn"]
        definition = ecs.register_task_definition(
            family="export-test",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="512",
            memory="1024",
            containerDefinitions=[{"name": "worker", "image": "worker", "memory": 1024}],
        )["taskDefinition"]["taskDefinitionArn"]
        yield Aws(cluster, definition, fan_out.Network([subnet], [group], False))


def execute(aws: Aws, worker: Worker, config: FanOutConfig, *, mode: str = "incremental", name: str = "exec-1"):
    """Render the definition (retry intervals shortened to 1 s, jittered), run one execution; (status, commands)."""
    document = fan_out.definition(
        config=config,
        target=fan_out.EcsTarget(aws.cluster_arn, aws.task_definition_arn, "worker", aws.network),
        bucket=BUCKET,
        prefix=PREFIX,
    )
    text = json.dumps(document).replace('"IntervalSeconds": 60', '"IntervalSeconds": 1')
    assert text.count('"IntervalSeconds": 1') == 3  # Plan, Shard, Commit
    runner = EcsRunner(worker)
    undo = runner.install()
    try:
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine = sfn.create_state_machine(
            name="export-test-fan-out", definition=text, roleArn="arn:aws:iam::123456789012:role/fan-out"
        )["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, name=name, input=fan_out.schedule_input(mode))[
            "executionArn"
        ]
        deadline = time.monotonic() + 30
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not finish within 30 s"
            time.sleep(0.05)
    finally:
        undo()
    return described["status"], runner.commands


def test_plan_every_planned_shard_then_commit_exactly_the_contract_commands(aws):
    config = FanOutConfig(max_shards=8, max_concurrency=2)
    worker = Worker(shards=[1, 3, 4])
    status, commands = execute(aws, worker, config, name="export-test-0900")
    assert status == "SUCCEEDED"
    # The worker's CLI took each command to the right fan-out step with the execution's real values.
    assert worker.parsed[0] == ("plan", "incremental", 8, "export-test-0900")
    assert sorted(worker.parsed[1:-1]) == [("run", RUN_ID, (k, 8)) for k in (1, 3, 4)]
    assert worker.parsed[-1] == ("commit", RUN_ID)
    assert commands[0] == contract.fan_out_plan_command("incremental", 8, "export-test-0900")
    # The Map runs the plan's shards (not all 8), in any order, each once.
    assert sorted(commands[1:-1]) == sorted(contract.fan_out_shard_command(RUN_ID, k, 8) for k in (1, 3, 4))
    assert commands[-1] == contract.fan_out_commit_command(RUN_ID)


def test_the_snapshot_schedule_input_plans_a_snapshot(aws):
    status, commands = execute(aws, Worker(shards=[1]), FanOutConfig(max_shards=2), mode="snapshot")
    assert status == "SUCCEEDED"
    assert commands == [
        contract.fan_out_plan_command("snapshot", 2, "exec-1"),
        contract.fan_out_shard_command(RUN_ID, 1, 2),
        contract.fan_out_commit_command(RUN_ID),
    ]


def test_a_distributed_map_runs_the_same_commands(aws):
    config = FanOutConfig(max_shards=50, max_concurrency=10)
    assert config.distributed
    status, commands = execute(aws, Worker(shards=[2, 49]), config)
    assert status == "SUCCEEDED"
    assert commands[0] == contract.fan_out_plan_command("incremental", 50, "exec-1")
    assert sorted(commands[1:-1]) == sorted(contract.fan_out_shard_command(RUN_ID, k, 50) for k in (2, 49))
    assert commands[-1] == contract.fan_out_commit_command(RUN_ID)


def test_a_failing_shard_is_retried_then_fails_the_run_before_commit(aws):
    failing = " ".join(contract.fan_out_shard_command(RUN_ID, 2, 4))
    status, commands = execute(aws, Worker(shards=[1, 2], failing={failing}), FanOutConfig(max_shards=4))
    assert status == "FAILED"
    attempts = 1 + fan_out.TASK_RETRY[0]["MaxAttempts"]
    assert [c for c in commands if " ".join(c) == failing] == [failing.split()] * attempts
    assert contract.fan_out_commit_command(RUN_ID) not in commands


def test_a_failing_plan_runs_no_shard(aws):
    failing = " ".join(contract.fan_out_plan_command("incremental", 4, "exec-1"))
    status, commands = execute(aws, Worker(shards=[1], failing={failing}), FanOutConfig(max_shards=4))
    assert status == "FAILED"
    assert commands == [failing.split()] * (1 + fan_out.TASK_RETRY[0]["MaxAttempts"])


def test_a_failing_commit_fails_the_run(aws):
    failing = " ".join(contract.fan_out_commit_command(RUN_ID))
    status, commands = execute(aws, Worker(shards=[1], failing={failing}), FanOutConfig(max_shards=2))
    assert status == "FAILED"
    assert commands[-1] == failing.split()
