"""An operator starts an on-demand export in the sandbox with the stack's own `runTaskCommand` (issue 18).

Real moto server (IAM, STS, ECS, S3) and the sandbox's doubles; the operator role, its trust and policy,
the cluster and the task definition all come from the mocked Pulumi program of the dev stack. moto does
not evaluate trust policies, so the refusal of an unlisted principal is the sandbox's own check of the
stack's trust statement (`trust_allows`), and the last test shows moto alone would have let it in.
"""

from __future__ import annotations

import json

import boto3
import pytest

from cosmos_export.contract import Output
from policy.rules import check_operator_trust
from sandbox import iam as sandbox_iam
from sandbox.demo import committed, seed
from sandbox.mocked_stack import run_stack
from sandbox.operator_run import OperatorRunError, RunCommand, execute, start_run, trust_allows
from sandbox.plan import plan_from_run
from sandbox.serve import describe, start_all

#: The dev stack's `operators` (stacks/Pulumi.dev.yaml): the permission-set role may export, restore and
#: read the state; the on-call role may only read the state (another operator role).
DATA_OPERATORS = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_DataOperators_0a1b2c3d4e5f6a7b"
ONCALL = "arn:aws:iam::111122223333:role/oncall/dev-oncall"
STRANGER = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Analysts_9f8e7d6c"


@pytest.fixture(scope="module")
def dev_run():
    return run_stack("dev")


@pytest.fixture(scope="module")
def state(dev_run, tmp_path_factory):
    running = start_all(tmp_path_factory.mktemp("operator-run"), plan=plan_from_run(dev_run))
    try:
        data = describe(running)
        seed(data, 50)
        yield data
    finally:
        running.stop()


def test_the_run_command_parses_into_its_assume_role_step_and_run_task_line(dev_run):
    command = RunCommand.parse(dev_run.outputs[Output.RUN_TASK_COMMAND])
    role = dev_run.outputs[Output.OPERATOR_ROLE_ARNS]["operator-export-restore-status"]
    assert command.assume.role_arn == role
    assert command.assume.duration_seconds == "3600"
    assert command.exports == "AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_SESSION_TOKEN=%s"
    kwargs = command.run_task_kwargs()
    assert kwargs["taskDefinition"] == dev_run.task_definition().outputs["arn"]
    assert kwargs["launchType"] == "FARGATE"
    assert kwargs["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] in ("ENABLED", "DISABLED")
    assert "overrides" not in kwargs  # the export runs the task definition's own command


def test_a_run_command_of_another_shape_is_refused(dev_run):
    text = dev_run.outputs[Output.RUN_TASK_COMMAND]
    with pytest.raises(OperatorRunError, match="two lines"):
        RunCommand.parse(text.splitlines()[1])  # the run-task line without the assume-role step
    with pytest.raises(OperatorRunError, match="unrecognized arguments: --count"):
        RunCommand.parse(text + " --count 5")


def test_a_listed_principal_assumes_the_operator_role_and_its_run_exports(dev_run, state):
    started = start_run(state, dev_run, DATA_OPERATORS)
    role_name = started.role_arn.rsplit("/", 1)[1]
    assert started.caller_arn.startswith(f"arn:aws:sts::111122223333:assumed-role/{role_name}/")
    assert started.task["taskDefinitionArn"] == dev_run.task_definition().outputs["arn"]
    assert started.task["launchType"] == "FARGATE"
    before = {c: len(m) for c, m in committed(state).items()}

    done = execute(state, started)

    assert done.returncode == 0, done.stdout
    container = json.loads(dev_run.task_definition().inputs["containerDefinitions"])[0]
    assert done.argv[-len(container["command"]) :] == container["command"]
    assert {c: len(m) for c, m in committed(state).items()} == {c: n + 1 for c, n in before.items()}


def test_an_operator_of_another_action_set_or_an_unlisted_role_cannot_assume_it(dev_run, state):
    for principal in (ONCALL, STRANGER):
        with pytest.raises(OperatorRunError, match="may not assume"):
            start_run(state, dev_run, principal)


def test_the_trust_check_reads_both_statement_shapes_and_refuses_what_it_does_not_know():
    role, sso = "arn:aws:iam::111122223333:role/ops/a", DATA_OPERATORS
    trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": [role]}, "Action": "sts:AssumeRole"},
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "sts:AssumeRole",
                "Condition": {"ArnEquals": {"aws:PrincipalArn": [sso]}},
            },
        ]
    }
    assert trust_allows(trust, role) and trust_allows(trust, sso)
    assert not trust_allows(trust, STRANGER)
    assert not trust_allows(trust, "arn:aws:iam::444455556666:role/ops/a")
    loose = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": [role]}, "Action": "sts:AssumeRole",
                            "Condition": {"StringLike": {"aws:PrincipalArn": "*"}}}]}  # fmt: skip
    with pytest.raises(OperatorRunError, match="not understood"):
        trust_allows(loose, role)


def test_moto_alone_would_let_the_unlisted_role_in_and_crossguard_pins_the_trust(dev_run, state):
    """Why the sandbox checks trust itself: in the unchecked window the operator run needs (moto scopes ECS calls
    to Resource "*" only), moto's AssumeRole grants any caller any role."""
    command = RunCommand.parse(dev_run.outputs[Output.RUN_TASK_COMMAND])
    sts = boto3.client(
        "sts",
        endpoint_url=state["endpoints"]["s3"],
        region_name=state["region"],
        aws_access_key_id="unlisted",
        aws_secret_access_key="unlisted",
    )
    with sandbox_iam.enforcement_off(state["endpoints"]["s3"]):
        assert sts.assume_role(RoleArn=command.assume.role_arn, RoleSessionName="stranger")["Credentials"]
    (role,) = [r for r in dev_run.of_type("aws:iam/role:Role") if r.outputs["arn"] == command.assume.role_arn]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert check_operator_trust(role.inputs) == []
    assert not trust_allows(trust, STRANGER) and trust_allows(trust, DATA_OPERATORS)
