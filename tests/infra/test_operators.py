"""Operators (components/operators.py): who may start data movement by hand, as which role, for how long.

Every stack file under mocks: the exact trust and policy of each operator role against the stack's own
`operators` entries; a stack without them declares none; bad entries refused before anything exists.
"""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from components import operators_config
from components.config import ConfigError, load_stack_config
from cosmos_export.contract import Output
from sandbox.mocked_stack import STACKS_DIR, run_stack, stack_config, stack_names

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
OPERATORS = "cosmos-s3-export:aws:Operators"


def configured(stack: str) -> list[dict]:
    """The stack file's own `operators` entries, read straight from the YAML (not through the program)."""
    data = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return data.get("cosmos-s3-export:operators") or []


def expected_roles(stack: str) -> dict[str, list[str]]:
    """role name -> principals: one role per distinct action set, in the stack's role naming."""
    out: dict[str, list[str]] = {}
    for entry in configured(stack):
        kind = "operator-" + "-".join(a for a in ("export", "restore", "status") if a in entry["actions"])
        out.setdefault(f"export-{stack}-{kind}", []).append(entry["principal"])
    return {k: sorted(v) for k, v in out.items()}


def policy_of(run, role) -> dict:
    (p,) = [r for r in run.of_type(ROLE_POLICY) if r.inputs["role"] == role.outputs["id"]]
    return json.loads(p.inputs["policy"])


def test_the_stack_files_exercise_operators():
    assert expected_roles("dev") and expected_roles("prod") and not expected_roles("staging")


@pytest.mark.parametrize("stack", stack_names())
def test_one_role_per_action_set_trusting_exactly_its_principals(stack):
    run = run_stack(stack)
    account = run.outputs[Output.TASK_ROLE_ARN].split(":")[4]
    roles = {r.name: r for r in run.of_type(ROLE) if "-operator-" in r.name}
    assert sorted(roles) == sorted(expected_roles(stack))
    for name, principals in expected_roles(stack).items():
        role = roles[name]
        assert role.inputs["path"] == f"/cosmos-s3-export/{stack}/"
        assert role.inputs["permissionsBoundary"] == f"arn:aws:iam::{account}:policy/cosmos-s3-export-{stack}-boundary"
        assert role.inputs["maxSessionDuration"] == 3600  # operatorSessionMinutes: 60 (default, and prod's)
        sso = sorted(p for p in principals if "/aws-reserved/sso.amazonaws.com/" in p)
        plain = sorted(p for p in principals if p not in sso)
        expected = []
        if plain:
            expected.append(
                {
                    "Sid": "ListedOperatorRoles",
                    "Effect": "Allow",
                    "Principal": {"AWS": plain},
                    "Action": "sts:AssumeRole",
                }
            )
        if sso:  # the permission-set roles of this account, pinned by aws:PrincipalArn on its root
            expected.append(
                {
                    "Sid": f"IdentityCenterPermissionSetRoles{account}",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"ArnEquals": {"aws:PrincipalArn": sso}},
                }
            )
        assert json.loads(role.inputs["assumeRolePolicy"]) == {"Version": "2012-10-17", "Statement": expected}


@pytest.mark.parametrize("stack", stack_names())
def test_each_operator_policy_allows_exactly_its_actions(stack):
    run = run_stack(stack)
    region = run.config["aws:region"]
    account = run.outputs[Output.TASK_ROLE_ARN].split(":")[4]
    cluster = run.one("aws:ecs/cluster:Cluster").outputs
    log_group = run.named("aws:cloudwatch/logGroup:LogGroup", f"export-{stack}-logs").outputs["arn"]
    execution = run.outputs[Output.EXECUTION_ROLE_ARN]
    family = f"arn:aws:ecs:{region}:{account}:task-definition/export-{stack}"
    env = run.worker_environment
    bucket, prefix = env["EXPORT_BUCKET"], env["EXPORT_PREFIX"]
    account_name = run.config["cosmos-s3-export:cosmosAccountName"]
    database = env["EXPORT_COSMOS_DATABASE"]
    roots = [f"{prefix}/{account_name}/{database}/{c}" for c in env["EXPORT_COSMOS_CONTAINERS"].split(",")]

    def run_and_pass(sid, fam, task_role):
        return [
            {
                "Sid": f"Run{sid}Task",
                "Effect": "Allow",
                "Action": "ecs:RunTask",
                "Resource": [fam, f"{fam}:*"],
                "Condition": {"ArnEquals": {"ecs:cluster": cluster["arn"]}},
            },
            {
                "Sid": f"Pass{sid}TaskRoles",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": sorted([task_role, execution]),
                "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            },
        ]

    for name in expected_roles(stack):
        actions = set(name.split("-operator-")[1].split("-"))
        want = []
        if "export" in actions:
            want += run_and_pass("Export", family, run.outputs[Output.TASK_ROLE_ARN])
        if "restore" in actions:
            want += run_and_pass("Restore", f"{family}-restore", run.outputs[Output.RESTORE_TASK_ROLE_ARN])
        if actions & {"export", "restore"}:
            want += [
                {
                    "Sid": "WatchAndStopTasksOfTheCluster",
                    "Effect": "Allow",
                    "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
                    "Resource": f"arn:aws:ecs:{region}:{account}:task/{cluster['name']}/*",
                    "Condition": {"ArnEquals": {"ecs:cluster": cluster["arn"]}},
                },
                {
                    "Sid": "ReadWorkerLogs",
                    "Effect": "Allow",
                    "Action": ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"],
                    "Resource": [log_group, f"{log_group}:log-stream:*"],
                },
            ]
        if "status" in actions:
            want += [
                {
                    "Sid": "ListExportPrefix",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": f"arn:aws:s3:::{bucket}",
                    "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
                },
                {
                    "Sid": "ListOpenUploads",
                    "Effect": "Allow",
                    "Action": "s3:ListBucketMultipartUploads",
                    "Resource": f"arn:aws:s3:::{bucket}",
                },
                {
                    "Sid": "ReadExportState",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": [
                        f"arn:aws:s3:::{bucket}/{root}/{key}"
                        for root in roots
                        for key in ("manifests/*", "checkpoint.json", "drills/*")
                    ],
                },
                {
                    "Sid": "ExportKeyThroughS3Only",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": run.kms_key_arn,
                    "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
                },
            ]
        assert policy_of(run, run.named(ROLE, name)) == {"Version": "2012-10-17", "Statement": want}, name


@pytest.mark.parametrize("stack", stack_names())
def test_run_commands_assume_the_operator_role_first(stack):
    run = run_stack(stack)
    arns = run.outputs[Output.OPERATOR_ROLE_ARNS]
    assert sorted(arns) == sorted(n.removeprefix(f"export-{stack}-") for n in expected_roles(stack))
    for output, action in ((Output.RUN_TASK_COMMAND, "export"), (Output.RUN_DRILL_COMMAND, "restore")):
        lines = run.outputs[output].splitlines()
        holders = sorted((k for k in arns if action in k), key=lambda k: (len(k.split("-")), k))
        if not holders:
            assert len(lines) == 1 and lines[0].startswith("aws ecs run-task ")
            continue
        assert len(lines) == 2 and lines[1].startswith("aws ecs run-task ")
        assume = shlex.split(lines[0].split("$(", 2)[2].rstrip(")"))
        assert assume[:3] == ["aws", "sts", "assume-role"]
        opts = dict(zip(assume[3::2], assume[4::2]))
        # The role of exactly that action where there is one, else the smallest set holding it.
        assert opts["--role-arn"] == arns[holders[0]] == arns.get(f"operator-{action}", arns[holders[0]])
        assert opts["--duration-seconds"] == "3600"
        assert opts["--output"] == "text"
        assert opts["--query"] == "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]"


def test_a_stack_without_operators_declares_none():
    run = run_stack("dev", {"operators": None})
    assert not [r for r in run.of_type(ROLE) if "operator" in r.name]
    assert not run.of_type(OPERATORS)
    assert run.outputs[Output.OPERATOR_ROLE_ARNS] == {}
    assert run.outputs[Output.RUN_TASK_COMMAND].startswith("aws ecs run-task ")
    assert "sts" not in run.outputs[Output.RUN_DRILL_COMMAND]


def test_session_minutes_set_the_roles_maximum_session():
    run = run_stack("prod", {"operatorSessionMinutes": 120})
    durations = {r.name: r.inputs["maxSessionDuration"] for r in run.of_type(ROLE) if "-operator-" in r.name}
    assert len(durations) == 4 and set(durations.values()) == {7200}
    # A chained session lasts at most an hour: the command never asks for more.
    assert "--duration-seconds 3600" in run.outputs[Output.RUN_TASK_COMMAND]


# --- Refused before anything is declared ---------------------------------------------------------

SSO = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Ops_0123456789abcdef"


def problems(stack: str = "dev", **overrides) -> list[str]:
    cfg = stack_config(stack, overrides)
    with pytest.raises(ConfigError) as caught:
        load_stack_config(cfg.get, stack, cfg.keys())
    return caught.value.problems


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"principal": "arn:aws:iam::111122223333:role/*", "actions": ["export"]},
            'cosmos-s3-export:operators[0].principal = "arn:aws:iam::111122223333:role/*": must be one exact IAM '
            "role ARN, no wildcard",
        ),
        (
            {"principal": "arn:aws:iam::111122223333:user/alice", "actions": ["export"]},
            'cosmos-s3-export:operators[0].principal = "arn:aws:iam::111122223333:user/alice": is an IAM user',
        ),
        (
            {"principal": "alice@example.com", "actions": ["status"]},
            'cosmos-s3-export:operators[0].principal = "alice@example.com": must be an IAM role ARN: '
            "arn:aws:iam::<12 digits>:role/<path/name>",
        ),
        (
            {"principal": SSO, "actions": ["export", "delete"]},
            "cosmos-s3-export:operators[0].actions[1] = \"delete\": Input should be 'export', 'restore' or 'status'",
        ),
        ({"principal": SSO, "actions": []}, "cosmos-s3-export:operators[0].actions = []: List should have at least 1"),
        (
            {"principal": SSO, "actions": ["status", "status"]},
            'cosmos-s3-export:operators[0].actions = ["status", "status"]: lists an action twice; list each once',
        ),
        (
            {"principal": SSO, "actions": ["status"], "mfa": True},
            "cosmos-s3-export:operators[0].mfa is not a known setting",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_key_value_and_fix(entry, message):
    (problem,) = problems(operators=[entry])
    assert problem.startswith(message), problem


def test_a_principal_twice_and_restore_without_the_restore_task_are_refused_at_once():
    entries = [{"principal": SSO, "actions": ["export"]}, {"principal": SSO, "actions": ["restore"]}]
    assert problems(operators=entries, restore=None, snapshotSchedule=None) == [
        f'cosmos-s3-export:operators = ["{SSO}"]: lists a principal more than once; give each principal one '
        "entry with all its actions",
        f"cosmos-s3-export:operators = [\"{SSO}\"]: grant 'restore' but the stack has no restore task "
        "(restore.enabled is false); enable restore or remove 'restore' from these entries",
    ]


@pytest.mark.parametrize("minutes", [30, 721])
def test_session_minutes_outside_iams_bounds_are_refused(minutes):
    (problem,) = problems(operatorSessionMinutes=minutes)
    # The value as the CLI hands it over (a string); the bound as the fix.
    assert problem.startswith(f'cosmos-s3-export:operatorSessionMinutes = "{minutes}": ') and problem.endswith(
        "; use 60..720"
    )


def test_bad_operators_fail_the_program_before_any_resource():
    with pytest.raises(ConfigError, match="operators"):
        run_stack("dev", {"operators": [{"principal": "*", "actions": ["export"]}]})


def test_principal_rules_and_role_kinds():
    assert operators_config.principal_problem(SSO) is None
    assert operators_config.is_sso_role(SSO)
    assert not operators_config.is_sso_role("arn:aws:iam::111122223333:role/oncall/dev-oncall")
    # A role merely named like a permission set, outside Identity Center's path, is not one.
    assert not operators_config.is_sso_role("arn:aws:iam::111122223333:role/AWSReservedSSO_Ops_0123")
    assert operators_config.role_kind(["status", "export"]) == "operator-export-status"
    assert operators_config.actions_of("operator-export-status") == {"export", "status"}
