"""The mocked-stack harness itself: lookups by name must also name the type.

Logical names are unique only per type: every component of a stack is
`export-<stack>`, and the worker's log group and the Log Analytics workspace
are both `export-<stack>-logs`. A lookup by name alone once picked whichever
came first; these tests fail if that comes back.
"""

from __future__ import annotations

import json

import pytest

from sandbox.mocked_stack import Registered, StackRun

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
WORKSPACE = "azure-native:operationalinsights:Workspace"
TASK_ROLE_COMPONENT = "cosmos-s3-export:aws:TaskRole"


def test_real_program_reuses_names_across_types(dev):
    names = [(r.type_, r.name) for r in dev.resources]
    assert {t for t, n in names if n == "export-dev-logs"} == {LOG_GROUP, WORKSPACE}
    assert len([n for _, n in names if n == "export-dev"]) == 9
    # The restore identity's components are export-dev-restore (a TaskRole, WorkloadIdentity, CosmosAccess, RestoreTargets).
    assert len([n for _, n in names if n == "export-dev-restore"]) == len(dev.components()) - 9 == 4
    assert dev.named(LOG_GROUP, "export-dev-logs").outputs["arn"].startswith("arn:aws:logs:")
    assert dev.named(WORKSPACE, "export-dev-logs").outputs["id"].startswith("/subscriptions/")


def test_named_refuses_a_missing_or_ambiguous_lookup(dev):
    with pytest.raises(AssertionError, match="expected exactly one aws:iam/role:Role named 'export-dev-logs', found 0"):
        dev.named(ROLE, "export-dev-logs")


def test_component_and_role_with_the_same_name_are_told_apart():
    arn = "arn:aws:iam::111122223333:role/cosmos-s3-export/export-dev-task-0a1b2c3"
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    component = Registered(
        TASK_ROLE_COMPONENT,
        "export-dev-task",
        {},
        {"id": ""},
        custom=False,
        urn="urn:pulumi:dev::p::cosmos-s3-export:aws:TaskRole::export-dev-task",
    )
    role = Registered(
        ROLE, "export-dev-task", {}, {"id": "export-dev-task-0a1b2c3", "arn": arn}, parent_urn=component.urn
    )
    inline = Registered(
        ROLE_POLICY,
        "export-dev-task-policy",
        {"role": "export-dev-task-0a1b2c3", "policy": json.dumps(policy)},
        {},
        parent_urn=component.urn,
    )
    # The component first: the order in which a name-only lookup went wrong.
    run = StackRun(stack="dev", config={}, resources=[component, role, inline], outputs={"taskRoleArn": arn})
    assert run.named(ROLE, "export-dev-task") is role
    assert run.named(TASK_ROLE_COMPONENT, "export-dev-task") is component
    assert run.task_role() is role
    assert run.task_role_policy() == policy
    assert run.children(TASK_ROLE_COMPONENT) == [role, inline]
    assert run.counts() == {ROLE: 1, ROLE_POLICY: 1}


def test_task_role_is_found_by_the_exported_arn(every_stack):
    role = every_stack.task_role()
    assert role.type_ == ROLE and role.custom
    assert role.outputs["arn"] == every_stack.task_role_arn
    assert role in every_stack.children(TASK_ROLE_COMPONENT, f"export-{every_stack.stack}")
