"""The pack's "who can move data" rules, on what the real program registers (mocks) and on edited copies."""

from __future__ import annotations

import json

import pytest

from cosmos_export import contract
from policy import rules
from sandbox.mocked_stack import run_stack
from tests.policy.policy_engine import from_mocked_run, policy_resource, violations
from tests.policy.test_policy_on_mocked_stacks import _edit, mocked

STACK_POLICY = "chain-of-trust-and-data-guardrails"
SSO = "arn:aws:iam::444455556666:role/aws-reserved/sso.amazonaws.com/eu-central-1/AWSReservedSSO_ReadOnly_9a8b7c6d5e4f3a2b"


def _trust(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(principal, condition=None) -> dict:
    st = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        st["Condition"] = condition
    return st


def test_the_program_s_operator_trusts_pass():
    for stack in ("dev", "prod"):
        roles = [r for r in mocked(stack).of_type(rules.T_ROLE) if "-operator-" in r.name]
        assert roles and all(rules.check_operator_trust(r.inputs) == [] for r in roles)


@pytest.mark.parametrize(
    ("principal", "condition", "message"),
    [
        ("*", None, 'trusts "*": name the operator roles exactly'),
        ({"AWS": "*"}, None, 'trusts "*": name the operator roles exactly'),
        ({"AWS": "arn:aws:iam::444455556666:root"}, None, "trusts the account root 'arn:aws:iam::444455556666:root'"),
        ({"AWS": "444455556666"}, None, "trusts the account root '444455556666'"),
        (
            {"AWS": "arn:aws:iam::444455556666:root"},
            {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::444455556666:role/aws-reserved/*"}},
            "without an exact aws:PrincipalArn (ArnEquals) condition",
        ),
        (
            {"AWS": "arn:aws:iam::444455556666:root"},
            {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::444455556666:role/aws-reserved/*"}},
            "without an exact aws:PrincipalArn (ArnEquals) condition",
        ),
        ({"AWS": "arn:aws:iam::444455556666:user/alice"}, None, "not one exact IAM role ARN (no wildcard, no user)"),
        ({"AWS": "arn:aws:iam::444455556666:role/ops-*"}, None, "not one exact IAM role ARN"),
    ],
)
def test_an_operator_trust_wider_than_exact_roles_is_refused(principal, condition, message):
    name = "export-prod-operator-status"
    found = violations(
        _edit(
            from_mocked_run(mocked("prod")), rules.T_ROLE, name, assumeRolePolicy=_trust(_allow(principal, condition))
        )
    )
    assert [(p, n) for p, n, _ in found] == [(STACK_POLICY, name)]
    assert message in found[0][2], found


def test_a_root_pinned_to_exact_roles_and_a_listed_role_pass():
    trust = _trust(
        _allow({"AWS": "arn:aws:iam::444455556666:root"}, {"ArnEquals": {"aws:PrincipalArn": [SSO]}}),
        _allow({"AWS": ["arn:aws:iam::444455556666:role/incident/prod-incident-commander"]}),
    )
    assert rules.check_operator_trust({"assumeRolePolicy": trust}) == []


def _pass_role_policy(resource) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": resource,
                    "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
                }
            ],
        }
    )


@pytest.mark.parametrize("target", ["task", "restore"])
def test_pass_role_on_a_task_role_granted_to_a_role_outside_the_stack_is_refused(target):
    run = mocked("prod")
    arn = run.outputs[contract.Output.TASK_ROLE_ARN if target == "task" else contract.Output.RESTORE_TASK_ROLE_ARN]
    outsider = policy_resource(
        "prod",
        rules.T_ROLE_POLICY,
        "export-prod-helpdesk-pass",
        {"role": "helpdesk-admin", "policy": _pass_role_policy(arn)},
    )
    found = violations(from_mocked_run(run) + [outsider])
    assert [(p, n) for p, n, _ in found] == [(STACK_POLICY, "export-prod-helpdesk-pass")]
    assert f"grants iam:PassRole on the task role(s) ['{arn}'] to role 'helpdesk-admin'" in found[0][2]


def test_a_managed_policy_passing_the_task_roles_by_pattern_is_refused():
    run = mocked("prod")
    managed = policy_resource(
        "prod",
        rules.T_POLICY,
        "export-prod-pass-anything",
        {"policy": _pass_role_policy("arn:aws:iam::444455556666:role/cosmos-s3-export/*")},
    )
    found = violations(from_mocked_run(run) + [managed])
    (message,) = [m for p, n, m in found if n == "export-prod-pass-anything"]
    both = sorted([run.outputs[contract.Output.TASK_ROLE_ARN], run.outputs[contract.Output.RESTORE_TASK_ROLE_ARN]])
    assert f"is a managed policy granting iam:PassRole on the task role(s) {both!r}" in message


def test_the_stack_s_own_schedulers_and_operators_may_pass_the_task_roles():
    run = run_stack("prod")
    passing = [
        p.name
        for p in run.of_type(rules.T_ROLE_POLICY)
        if rules._grants_pass_role_on(json.loads(p.inputs["policy"]), [run.task_role_arn])
    ]
    assert sorted(passing) == [
        "export-prod-operator-export-policy",
        "export-prod-operator-export-restore-policy",
        "export-prod-scheduler-policy",
    ]
    assert rules.check_pass_role_grants(rules.Stack(_rule_resources(run))) == []


def _rule_resources(run):
    return [rules.Resource(type=r.type_, key=r.urn, props={**r.inputs, **r.outputs}, deps={}) for r in run.resources]
