"""A stack with `fanOut` on, under mocks (every stack file has it off): the fan-out role and its policy, the
scheduler that starts the state machine instead of the task, the schedules' targets and input, the alarms,
the bucket and key policies, and what fanOut adds to the program (and that it removes nothing)."""

from __future__ import annotations

import functools
import json

from components import fan_out
from cosmos_export import contract
from cosmos_export.contract import Output
from sandbox.mocked_stack import StackRun, run_stack

ACCOUNT, REGION = "111122223333", "eu-west-1"  # dev, as sandbox/mocked_stack.py mocks it
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:export-dev-fan-out"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
SCHEDULE = "aws:scheduler/schedule:Schedule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@functools.lru_cache(maxsize=None)
def off() -> StackRun:
    return run_stack("dev")


@functools.lru_cache(maxsize=None)
def inline() -> StackRun:
    return run_stack("dev", {"fanOut": {"maxShards": 8, "maxConcurrency": 4}})


@functools.lru_cache(maxsize=None)
def distributed() -> StackRun:
    return run_stack("dev", {"fanOut": {"maxShards": 50}})


def _policy(run: StackRun, role: str) -> dict:
    (policy,) = [p for p in run.of_type(POLICY) if p.inputs["role"] == role]
    return {st["Sid"]: st for st in json.loads(policy.inputs["policy"])["Statement"]}


def _machine(run: StackRun):
    (machine,) = run.of_type("aws:sfn/stateMachine:StateMachine")
    return machine


def test_fan_out_adds_its_machine_role_and_alarms_and_removes_nothing():
    names = lambda run: {(r.type_, r.name) for r in run.resources}  # noqa: E731
    assert names(inline()) - names(off()) == {
        ("cosmos-s3-export:aws:FanOut", "export-dev-fan-out"),
        (ROLE, "export-dev-fan-out-role"),
        (POLICY, "export-dev-fan-out-role-policy"),
        ("aws:sfn/stateMachine:StateMachine", "export-dev-fan-out-state-machine"),
        (ALARM, "export-dev-fan-out-failed"),
        (ALARM, "export-dev-fan-out-timed-out"),
        (ALARM, "export-dev-fan-out-aborted"),
    }
    assert names(off()) <= names(inline())
    assert names(distributed()) == names(inline())  # Distributed changes the definition and policy only


def test_the_state_machine_is_named_tagged_and_runs_the_export_task_in_the_stack_network():
    run = inline()
    machine = _machine(run)
    assert machine.outputs["arn"] == MACHINE
    assert machine.inputs["name"] == "export-dev-fan-out" and machine.inputs["type"] == "STANDARD"
    assert machine.inputs["tags"] == {"cosmos-s3-export-stack": "dev"}
    role = run.named(ROLE, "export-dev-fan-out-role")
    assert machine.inputs["roleArn"] == role.outputs["arn"]
    document = json.loads(machine.inputs["definition"])
    assert document["TimeoutSeconds"] == 24 * 3600
    shards = document["States"]["Shards"]
    assert shards["MaxConcurrency"] == 4 and shards["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    cluster = run.one("aws:ecs/cluster:Cluster").outputs["arn"]
    group = run.one("aws:ec2/securityGroup:SecurityGroup").outputs["id"]
    subnets = json.loads(run.config["cosmos-s3-export:subnetIds"])
    tasks = [document["States"][s] for s in ("Plan", "Commit")] + [shards["ItemProcessor"]["States"]["Shard"]]
    for task in tasks:
        p = task["Parameters"]
        assert p["Cluster"] == cluster
        assert p["TaskDefinition"] == run.outputs[Output.TASK_DEFINITION_ARN]
        assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"] == [group]
        assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == subnets
    read_plan = document["States"]["ReadPlan"]["Parameters"]
    assert read_plan["Bucket"] == run.outputs[Output.BUCKET]
    assert read_plan["Key.$"] == "States.Format('cosmos/fan-out/{}.json', $$.Execution.Name)"
    dist = json.loads(_machine(distributed()).inputs["definition"])["States"]["Shards"]
    assert dist["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert dist["MaxConcurrency"] == 50


def test_fan_out_role_is_trusted_by_this_machine_only_and_under_the_boundary():
    role = inline().named(ROLE, "export-dev-fan-out-role")
    assert role.outputs["arn"] == f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/dev/export-dev-fan-out"
    assert role.inputs["permissionsBoundary"] == f"arn:aws:iam::{ACCOUNT}:policy/cosmos-s3-export-dev-boundary"
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": [MACHINE, f"{MACHINE}/*"]},
    }


def test_fan_out_role_runs_only_the_export_family_and_passes_only_its_two_roles():
    run = inline()
    s = _policy(run, "export-dev-fan-out")
    cluster = run.one("aws:ecs/cluster:Cluster")
    family = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/export-dev"
    on_cluster = {"ArnEquals": {"ecs:cluster": cluster.outputs["arn"]}}
    assert s == {
        "RunWorkerTask": {
            "Sid": "RunWorkerTask",
            "Effect": "Allow",
            "Action": "ecs:RunTask",
            "Resource": [family, f"{family}:*"],  # not -snapshot, not -restore
            "Condition": on_cluster,
        },
        "WatchWorkerTasks": {
            "Sid": "WatchWorkerTasks",
            "Effect": "Allow",
            "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
            "Resource": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster.outputs['name']}/*",
            "Condition": on_cluster,
        },
        "PassWorkerRoles": {
            "Sid": "PassWorkerRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": sorted([run.task_role_arn, run.outputs[Output.EXECUTION_ROLE_ARN]]),
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        },
        "EcsTaskStateEvents": {
            "Sid": "EcsTaskStateEvents",
            "Effect": "Allow",
            "Action": ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            "Resource": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForECSTaskRule",
        },
        "ReadFanOutPlans": {
            "Sid": "ReadFanOutPlans",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{run.outputs[Output.BUCKET]}/cosmos/fan-out/*.json",
        },
        "ExportKeyThroughS3Only": {
            "Sid": "ExportKeyThroughS3Only",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": run.kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}},
        },
    }
    # The plan key the state machine reads is inside the one object grant.
    assert contract.fan_out_plan_key("cosmos", "x").startswith("cosmos/fan-out/")


def test_distributed_map_adds_its_own_child_executions_only():
    inline_s, dist = _policy(inline(), "export-dev-fan-out"), _policy(distributed(), "export-dev-fan-out")
    assert {k: v for k, v in dist.items() if k not in inline_s} == {
        "StartOwnChildExecutions": {
            "Sid": "StartOwnChildExecutions",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": MACHINE,
        },
        "WatchOwnChildExecutions": {
            "Sid": "WatchOwnChildExecutions",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:export-dev-fan-out/*",
        },
    }
    assert {k: v for k, v in dist.items() if k in inline_s} == inline_s


def test_the_scheduler_starts_the_machine_and_runs_no_task():
    run = inline()
    dlq = run.one("aws:sqs/queue:Queue").outputs["arn"]
    assert _policy(run, "export-dev-scheduler") == {
        "StartFanOut": {
            "Sid": "StartFanOut",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": MACHINE,
        },
        "DeadLetters": {"Sid": "DeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": dlq},
    }
    role = run.named(ROLE, "export-dev-scheduler").inputs
    assert role["description"] == "EventBridge Scheduler: start the fan-out state machine"
    # Without fanOut the same role runs the tasks itself (so the test above is about fanOut, not the role).
    assert "RunWorkerTask" in _policy(off(), "export-dev-scheduler")
    # The restore drills still run their own task through their own scheduler, unchanged.
    assert _policy(run, "export-dev-restore-scheduler") == _policy(off(), "export-dev-restore-scheduler")


def test_the_export_and_snapshot_schedules_start_the_machine_with_their_mode():
    run, before = inline(), off()
    scheduler = run.named(ROLE, "export-dev-scheduler").outputs["arn"]
    for logical, mode in (("export-dev-schedule", "incremental"), ("export-dev-snapshot-schedule", "snapshot")):
        target = run.named(SCHEDULE, logical).inputs["target"]
        old = before.named(SCHEDULE, logical).inputs["target"]
        assert target == {
            "arn": MACHINE,
            "roleArn": scheduler,
            "input": json.dumps({"mode": mode}),
            "retryPolicy": old["retryPolicy"],  # the same retries and dead-letter queue as the task's
            "deadLetterConfig": old["deadLetterConfig"],
        }
        assert json.loads(target["input"]) == json.loads(fan_out.schedule_input(mode))
        assert "ecsParameters" in old  # it was the task before
        schedule, was = run.named(SCHEDULE, logical).inputs, before.named(SCHEDULE, logical).inputs
        assert {k: v for k, v in schedule.items() if k != "target"} == {k: v for k, v in was.items() if k != "target"}
    drills = [s for s in run.of_type(SCHEDULE) if "drill" in s.name]
    assert drills and all(s.inputs == before.named(SCHEDULE, s.name).inputs for s in drills)


def test_three_alarms_report_failed_timed_out_and_aborted_executions_to_the_alert_topic():
    run = inline()
    topic = [run.outputs[Output.ALERT_TOPIC_ARN]]
    alarms = {a.name: a.inputs for a in run.of_type(ALARM) if "fan-out" in a.name}
    assert {name: a["metricName"] for name, a in alarms.items()} == {
        "export-dev-fan-out-failed": "ExecutionsFailed",
        "export-dev-fan-out-timed-out": "ExecutionsTimedOut",
        "export-dev-fan-out-aborted": "ExecutionsAborted",
    }
    for a in alarms.values():
        assert a["namespace"] == "AWS/States"
        assert a["dimensions"] == {"StateMachineArn": MACHINE}
        assert (a["statistic"], a["period"], a["evaluationPeriods"]) == ("Sum", 300, 1)
        assert (a["comparisonOperator"], a["threshold"]) == ("GreaterThanThreshold", 0)
        assert a["alarmActions"] == topic and a["okActions"] == topic
        assert a["treatMissingData"] == "notBreaching"
    assert not [a for a in off().of_type(ALARM) if "fan-out" in a.name]


def test_the_bucket_and_key_policies_let_the_fan_out_role_read_and_nothing_more():
    role = f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/dev/export-dev-fan-out"

    def principals(run: StackRun) -> dict[str, list[str]]:
        bucket = run.named("aws:s3/bucketPolicy:BucketPolicy", "export-dev-policy")
        key = run.named("aws:kms/key:Key", "export-dev-key")
        b = {st["Sid"]: st for st in json.loads(bucket.inputs["policy"])["Statement"]}
        k = {st["Sid"]: st for st in json.loads(key.inputs["policy"])["Statement"]}
        return {
            "read": b["OnlyReadersReadObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
            "write": b["OnlyWritersWriteObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
            "delete": b["OnlyDeletersDeleteObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
            "decrypt": k["ReadersAndWritersDecrypt"]["Condition"]["ArnEquals"]["aws:PrincipalArn"],
            "encrypt": k["WritersEncrypt"]["Condition"]["ArnEquals"]["aws:PrincipalArn"],
        }

    on, before = principals(inline()), principals(off())
    assert sorted(on["read"]) == sorted([*before["read"], role])
    assert sorted(on["decrypt"]) == sorted([*before["decrypt"], role])
    for kind in ("write", "delete", "encrypt"):
        assert on[kind] == before[kind], kind
        assert role not in on[kind]
