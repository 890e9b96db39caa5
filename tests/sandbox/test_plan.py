"""The sandbox plan comes from what the Pulumi program declares, so infrastructure mistakes fail locally.

The identity chain here is the worker's own (`cosmos_export.identity`) against
the STS and Entra doubles configured by `sandbox.serve.start_identity` from
the plan: a deliberately broken stack run must fail with the AADSTS code the
cloud would give.
"""

from __future__ import annotations

import copy
import json

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError

from cosmos_export import contract
from cosmos_export.contract import Env
from sandbox.mocked_stack import run_stack
from sandbox.plan import FIC, PlanError, plan_from_run
from sandbox.serve import Running, start_identity

TASK_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIASANDBOXTESTKEY01",
    "AWS_SECRET_ACCESS_KEY": "sandbox-test-only",
    "AWS_SESSION_TOKEN": "sandbox-test-session",
}


@pytest.fixture(scope="module")
def dev_run():
    return run_stack("dev")


def _fresh(run):
    return copy.deepcopy(run)


def test_plan_takes_every_value_from_the_declared_resources(dev_run):
    plan = plan_from_run(dev_run)
    fic = dev_run.named(FIC, "export-dev-fic-ecs-task")
    task_role = [r for r in dev_run.of_type("aws:iam/role:Role") if r.name == "export-dev-task"][0]
    app = dev_run.named("azuread:index/application:Application", "export-dev-app")
    sp = dev_run.named("azuread:index/servicePrincipal:ServicePrincipal", "export-dev-sp")

    assert plan.task_role_arn == task_role.outputs["arn"] == dev_run.outputs[contract.Output.TASK_ROLE_ARN]
    assert plan.task_role_arn == "arn:aws:iam::111122223333:role/cosmos-s3-export/dev/export-dev-task"
    assert [
        (f.issuer, f.subject, f.audiences, f.client_id)
        for f in plan.federated_credentials
        if f.client_id == plan.client_id
    ] == [(fic.inputs["issuer"], fic.inputs["subject"], (contract.TOKEN_EXCHANGE_AUDIENCE,), app.outputs["clientId"])]
    assert plan.issuer == dev_run.outputs[contract.Output.ISSUER]
    # The export app and the restore app (tests/sandbox/test_restore_identity.py covers the latter).
    assert (app.outputs["clientId"], sp.outputs["objectId"]) in [
        (a.client_id, a.service_principal_object_id) for a in plan.applications
    ]
    assert len(plan.applications) == 2
    assert plan.tenant_id == dev_run.outputs[contract.Output.TENANT_ID]
    # The task role policy's conditions, as IAM would evaluate them.
    assert plan.token_policy.audiences == (contract.TOKEN_EXCHANGE_AUDIENCE,)
    assert plan.token_policy.signing_algorithms == ("RS256",)
    assert plan.token_policy.max_duration_seconds == 300
    # Cosmos: one read-only assignment per exported container, to the service principal.
    assert plan.cosmos_account == "acme-orders-dev"
    assert plan.cosmos_database == "orders" and plan.cosmos_containers == ("orders", "customers")
    export_assignments = [a for a in plan.cosmos_assignments if a.principal_id == sp.outputs["objectId"]]
    assert sorted(a.scope for a in export_assignments) == ["/dbs/orders/colls/customers", "/dbs/orders/colls/orders"]
    for assignment in export_assignments:
        assert assignment.principal_id == sp.outputs["objectId"]
        assert set(assignment.data_actions) == set(contract.COSMOS_DATA_ACTIONS)
    # The worker environment is the task definition's, unchanged.
    container_definitions = json.loads(dev_run.task_definition().inputs["containerDefinitions"])
    assert plan.worker_environment == {e["name"]: e["value"] for e in container_definitions[0]["environment"]}
    assert plan.bucket == "acme-cosmos-export-dev-euw1" and plan.prefix == "cosmos"
    assert plan.kms_key_arn == dev_run.outputs[contract.Output.KMS_KEY_ARN]


def test_plan_refuses_a_fic_bound_to_the_client_id_instead_of_the_application_id(dev_run):
    run = _fresh(dev_run)
    fic = run.named(FIC, "export-dev-fic-ecs-task")
    client_id = run.named("azuread:index/application:Application", "export-dev-app").outputs["clientId"]
    fic.inputs["applicationId"] = client_id
    with pytest.raises(
        PlanError,
        match=rf"application_id='{client_id}' is not the id of any declared "
        r"application; pass app.id \(not app.client_id\)",
    ):
        plan_from_run(run)


@pytest.fixture()
def identity_chain(local_ca, monkeypatch):
    """Start the STS + Entra doubles for a plan; returns a function giving the worker's credential."""
    started: list[Running] = []

    def start(plan):
        running = Running(plan=plan, cosmos_kind="gateway", ca=local_ca, moto=None)
        started.append(running)
        start_identity(plan, local_ca, TASK_CREDENTIALS, running)
        env = dict(plan.worker_environment)
        env.update(
            {
                Env.STS_ENDPOINT: running.sts.url,
                Env.AZURE_AUTHORITY_HOST: running.entra.url,
                "REQUESTS_CA_BUNDLE": str(local_ca.bundle_file),
                "AWS_CA_BUNDLE": str(local_ca.bundle_file),
                **TASK_CREDENTIALS,
            }
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from cosmos_export import identity
        from cosmos_export.settings import load_settings

        return running, identity.azure_credential(load_settings())

    yield start
    for running in started:
        running.stop()


def test_declared_chain_yields_a_cosmos_token_for_the_service_principal(dev_run, identity_chain):
    plan = plan_from_run(dev_run)
    running, credential = identity_chain(plan)
    token = credential.get_token("https://127.0.0.1/.default").token
    claims = running.entra_state.verify_access_token(token, "https://127.0.0.1")
    assert claims["oid"] == plan.applications[0].service_principal_object_id
    assert claims["tid"] == plan.tenant_id
    # The AWS token Entra accepted was the task role's, for the FIC's audience.
    (issued,) = running.sts_state.issued
    assert issued["sub"] == plan.task_role_arn and issued["iss"] == plan.issuer
    assert issued["aud"] == contract.TOKEN_EXCHANGE_AUDIENCE
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "https://127.0.0.1"


def test_fic_subject_wired_to_the_execution_role_fails_with_aadsts700213(dev_run, identity_chain):
    run = _fresh(dev_run)
    fic = run.named(FIC, "export-dev-fic-ecs-task")
    fic.inputs["subject"] = run.outputs[contract.Output.EXECUTION_ROLE_ARN]  # the infrastructure mistake
    plan = plan_from_run(run)
    (declared,) = [f for f in plan.federated_credentials if f.client_id == plan.client_id]
    assert declared.subject == run.outputs[contract.Output.EXECUTION_ROLE_ARN] != plan.task_role_arn
    _, credential = identity_chain(plan)
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token("https://127.0.0.1/.default")
    assert "AADSTS700213" in str(caught.value)


def test_fic_issuer_with_a_trailing_slash_fails_with_aadsts700211(dev_run, identity_chain):
    run = _fresh(dev_run)
    fic = run.named(FIC, "export-dev-fic-ecs-task")
    fic.inputs["issuer"] = fic.inputs["issuer"] + "/"
    _, credential = identity_chain(plan_from_run(run))
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token("https://127.0.0.1/.default")
    assert "AADSTS700211" in str(caught.value)


def test_task_role_policy_without_rs256_is_denied_by_sts(dev_run, identity_chain):
    run = _fresh(dev_run)
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        document = json.loads(policy.inputs["policy"])
        for statement in document["Statement"]:
            if statement.get("Action") == "sts:GetWebIdentityToken":
                statement["Condition"]["StringEquals"]["sts:SigningAlgorithm"] = "ES384"
        policy.inputs["policy"] = json.dumps(document)
    plan = plan_from_run(run)
    assert plan.token_policy.signing_algorithms == ("ES384",)
    _, credential = identity_chain(plan)
    with pytest.raises(Exception) as caught:
        credential.get_token("https://127.0.0.1/.default")
    assert "sts:GetWebIdentityToken" in str(caught.value) and "SigningAlgorithm" in str(caught.value)
