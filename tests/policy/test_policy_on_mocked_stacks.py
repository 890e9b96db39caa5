"""The pack against what the real program registers for every stack in stacks/ (under mocks)."""

from __future__ import annotations

import functools
import json

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from cosmos_export import contract
from policy import rules
from sandbox.mocked_stack import run_stack, stack_names
from tests.policy.policy_engine import camel_keys, from_mocked_run, policy_resource, violations


@functools.lru_cache(maxsize=None)
def mocked(stack: str):
    return run_stack(stack)


def _resources(stack: str):
    return from_mocked_run(mocked(stack))


def _edit(resources, type_: str, name: str | None = None, **props):
    """Copy with the resource of `type_` (named `name` when there are several) given new props."""
    [target] = [r for r in resources if r.resource_type == type_ and name in (None, r.name)]
    out = []
    for r in resources:
        if r is target:
            raw = {k: r.props["__target"][k] for k in r.props}
            r = policy_resource(stack_of(r), r.resource_type, r.name, {**raw, **props})
        out.append(r)
    return out


def stack_of(resource) -> str:
    return resource.urn.split(":")[2]


def test_every_stack_is_discovered():
    assert {"dev", "staging", "prod"} <= set(stack_names())


@pytest.mark.parametrize("stack", stack_names())
def test_program_passes_every_policy(stack):
    resources = _resources(stack)
    # The chain-of-trust resources must be there for the stack policy to judge them.
    types = {r.resource_type for r in resources}
    assert {rules.T_FIC, rules.T_TASK_DEFINITION, rules.T_BUCKET, rules.T_COSMOS_ROLE_ASSIGNMENT} <= types
    assert violations(resources) == []


@pytest.mark.parametrize("stack", stack_names())
def test_fic_subject_changed_is_rejected(stack):
    run = mocked(stack)
    execution_role = run.named(rules.T_ROLE, f"export-{stack}-execution").outputs["arn"]
    found = violations(_edit(_resources(stack), rules.T_FIC, f"export-{stack}-fic-ecs-task", subject=execution_role))
    restore_role = run.outputs[contract.Output.RESTORE_TASK_ROLE_ARN]
    assert found == [
        (
            "chain-of-trust-and-data-guardrails",
            f"export-{stack}-fic-ecs-task",
            f"ApplicationFederatedIdentityCredential '{policy_resource(stack, rules.T_FIC, f'export-{stack}-fic-ecs-task', {}).urn}' "
            f"subject {execution_role!r} is not the task role ARN [{run.task_role_arn!r}, {restore_role!r}]; "
            "take it from the task role's arn output",
        )
    ]


def test_fic_wildcard_and_issuer_rejected():
    found = violations(
        _edit(
            _resources("dev"),
            rules.T_FIC,
            "export-dev-fic-ecs-task",
            subject="arn:aws:iam::111122223333:role/*",
            issuer="https://token.actions.githubusercontent.com",
        )
    )
    policies = sorted({p for p, _, _ in found})
    assert policies == ["chain-of-trust-and-data-guardrails", "federated-credential-shape"]
    assert any("is empty or a wildcard" in m for _, _, m in found)
    assert any("is not the account's outbound federation issuer" in m for _, _, m in found)


def test_static_credential_added_is_rejected():
    resources = _resources("prod") + [
        policy_resource(
            "prod",
            "azuread:index/applicationPassword:ApplicationPassword",
            "export-prod-secret",
            {"applicationId": "x"},
        )
    ]
    assert [(p, n) for p, n, _ in violations(resources)] == [("no-static-credentials", "export-prod-secret")]


def test_write_action_and_container_secret_rejected():
    td = mocked("staging").task_definition()
    containers = json.loads(td.inputs["containerDefinitions"])
    containers[0]["secrets"] = [{"name": "COSMOS_KEY", "valueFrom": "arn:aws:ssm:eu-west-1:111122223333:parameter/k"}]
    resources = _edit(
        _resources("staging"), rules.T_TASK_DEFINITION, td.name, containerDefinitions=json.dumps(containers)
    )
    resources = _edit(
        resources,
        rules.T_COSMOS_ROLE_DEFINITION,
        "export-staging-role",
        permissions=[{"dataActions": ["Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*"]}],
    )
    found = violations(resources)
    assert sorted(p for p, _, _ in found if p != "chain-of-trust-and-data-guardrails") == [
        "cosmos-role-read-only",
        "task-definition-no-secrets-non-root",
    ]
    # The export reader turned writer is now a writer on every exported source container.
    writer_on_source = sorted(
        n
        for p, n, m in found
        if p == "chain-of-trust-and-data-guardrails"
        and "gives a writer role on the exported source container orders/" in m
    )
    assert len(writer_on_source) == 3 == len(found) - 2


def test_preview_unknowns_are_judged_by_dependencies():
    """In a first preview the FIC's subject and issuer are unknown; the engine still says what they come from."""
    resources = _resources("dev")
    by_name = {(r.resource_type, r.name): r for r in resources}

    def fic_from(subject_source: str):
        fic = next(r for r in resources if r.resource_type == rules.T_FIC and r.name == "export-dev-fic-ecs-task")
        raw = {k: fic.props["__target"][k] for k in fic.props}
        raw.update(subject=UNKNOWN_STRING_VALUE, issuer=UNKNOWN_STRING_VALUE)
        deps = {
            "subject": [by_name[(rules.T_ROLE, subject_source)]],
            "issuer": [by_name[(rules.T_OUTBOUND_FEDERATION, "export-dev-federation")]],
        }
        new = policy_resource("dev", fic.resource_type, fic.name, raw, deps)
        return [new if r is fic else r for r in resources]

    assert violations(fic_from("export-dev-task")) == []
    found = violations(fic_from("export-dev-execution"))
    assert len(found) == 1 and "is not the task role ARN" in found[0][2]


def test_camel_keys_converter():
    assert camel_keys(
        {
            "block_public_acls": True,
            "rules": [{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"}}],
            "taskRoleArn": "a",
        }
    ) == {
        "blockPublicAcls": True,
        "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
        "taskRoleArn": "a",
    }


def _edit_named(resources, type_: str, name: str, **props):
    out = []
    for r in resources:
        if r.resource_type == type_ and r.name == name:
            raw = {k: r.props["__target"][k] for k in r.props}
            r = policy_resource(stack_of(r), r.resource_type, r.name, {**raw, **props})
        out.append(r)
    return out


@pytest.mark.parametrize("stack", stack_names())
def test_role_without_boundary_or_on_another_stacks_path_is_rejected(stack):
    other = "staging" if stack != "staging" else "dev"
    resources = _edit_named(_resources(stack), rules.T_ROLE, f"export-{stack}-scheduler", permissionsBoundary=None)
    resources = _edit_named(resources, rules.T_ROLE, f"export-{stack}-execution", path=f"/cosmos-s3-export/{other}/")
    found = sorted((p, n, m.split("': ", 1)[1]) for p, n, m in violations(resources))
    assert [(p, n) for p, n, _ in found] == [
        ("chain-of-trust-and-data-guardrails", f"export-{stack}-execution"),
        ("chain-of-trust-and-data-guardrails", f"export-{stack}-scheduler"),
    ]
    assert found[0][2].startswith(f"role path '/cosmos-s3-export/{other}/' is not /cosmos-s3-export/{stack}/")
    assert found[1][2].startswith(
        "role has permissionsBoundary None; every program role carries the bootstrap's boundary"
    )


def test_default_key_policy_and_wildcard_role_policy_are_rejected():
    resources = _edit_named(
        _resources("prod"),
        rules.T_KMS_KEY,
        "export-prod-key",
        policy=json.dumps(
            {
                "Statement": [
                    {
                        "Sid": "Default",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ]
            }
        ),
    )
    resources = _edit_named(
        resources,
        rules.T_ROLE_POLICY,
        "export-prod-scheduler-policy",
        policy=json.dumps({"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}),
    )
    found = sorted((n, m) for _, n, m in violations(resources))
    assert [n for n, _ in found] == ["export-prod-key", "export-prod-scheduler-policy"]
    assert "statement Default allows kms:*: split key administration from key use" in found[0][1]
    assert "statement All allows whole services ['ecs:*']; name the exact actions" in found[1][1]


def test_entra_app_holding_a_password_is_rejected():
    resources = _edit_named(
        _resources("dev"),
        "azuread:index/application:Application",
        "export-dev-app",
        password={"displayName": "added-by-hand", "keyId": "3c1b"},
    )
    assert [(p, n) for p, n, _ in violations(resources)] == [("no-static-credentials", "export-dev-app")]


@pytest.mark.parametrize("stack", stack_names())
def test_public_alert_topic_is_rejected(stack):
    topic_policy = mocked(stack).one(rules.T_SNS_TOPIC_POLICY).inputs["policy"]
    document = json.loads(topic_policy)
    document["Statement"][0]["Principal"] = "*"
    found = violations(_edit(_resources(stack), rules.T_SNS_TOPIC_POLICY, policy=json.dumps(document)))
    assert [(p, n) for p, n, _ in found] == [("chain-of-trust-and-data-guardrails", f"export-{stack}-alerts-policy")]


@functools.lru_cache(maxsize=None)
def _fan_out_resources():
    """dev with a Distributed Map fan-out (every stack file has fanOut off)."""
    return from_mocked_run(run_stack("dev", {"fanOut": {"maxShards": 50}}))


def test_a_fan_out_stack_passes_every_policy_and_a_widened_fan_out_role_does_not():
    resources = _fan_out_resources()
    assert "export-dev-fan-out-role-policy" in {r.name for r in resources}
    assert violations(resources) == []
    widened = _edit_named(
        resources,
        rules.T_ROLE_POLICY,
        "export-dev-fan-out-role-policy",
        policy=json.dumps({"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "states:*", "Resource": "*"}]}),
    )
    found = [(n, m) for _, n, m in violations(widened)]
    assert [n for n, _ in found] == ["export-dev-fan-out-role-policy"]
    assert "statement All allows whole services ['states:*']; name the exact actions" in found[0][1]
