"""The restore identity in the sandbox, configured from what the Pulumi program declares (dev stack).

The STS, Entra and Cosmos doubles get the restore task role's session, the restore app's federated
credential and the restore role's assignments exactly as the export ones (`sandbox.serve`), so a
wrong restore FIC subject fails with AADSTS700213 as in Azure, and the double's data-plane RBAC keeps
each identity to its own containers: the restore identity writes the targets and nothing else, the
export identity cannot touch the targets.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import CosmosClient
from azure.cosmos import exceptions as cosmos_exceptions

from cosmos_export import contract
from cosmos_export.contract import Env, Output
from sandbox.mocked_stack import run_stack
from sandbox.plan import FIC, plan_from_run
from sandbox.serve import Running, start_cosmos, start_identity, worker_environment

EXPORT_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIASANDBOXEXPORT001",
    "AWS_SECRET_ACCESS_KEY": "sandbox-test-only",
    "AWS_SESSION_TOKEN": "sandbox-test-session-export",
}
RESTORE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIASANDBOXRESTORE01",
    "AWS_SECRET_ACCESS_KEY": "sandbox-test-only",
    "AWS_SESSION_TOKEN": "sandbox-test-session-restore",
}


@pytest.fixture(scope="module")
def dev_run():
    return run_stack("dev")


@pytest.fixture()
def sandbox(local_ca, monkeypatch):
    """Start STS + Entra (+ the gateway double) for a plan; returns (running, credential_for(identity))."""
    started: list[Running] = []

    def start(plan, *, cosmos: bool = False):
        # No moto: the identity chain needs no S3; worker_environment only reads its url.
        no_moto: Any = SimpleNamespace(url="http://127.0.0.1:1")
        running = Running(plan=plan, cosmos_kind="gateway", ca=local_ca, moto=no_moto)
        running.credentials, running.restore_credentials = EXPORT_CREDENTIALS, RESTORE_CREDENTIALS
        started.append(running)
        start_identity(plan, local_ca, EXPORT_CREDENTIALS, running)
        if cosmos:
            start_cosmos(plan, local_ca, "gateway", running, None)
        else:
            running.cosmos = SimpleNamespace(url="https://127.0.0.1:1")

        def credential(restore: bool):
            from cosmos_export import identity
            from cosmos_export.settings import load_settings

            env = worker_environment(running, restore=restore)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            return identity.azure_credential(load_settings())

        return running, credential

    yield start
    for running in started:
        running.stop()


def test_plan_takes_the_restore_identity_from_the_declared_resources(dev_run):
    plan = plan_from_run(dev_run)
    restore_role = dev_run.named("aws:iam/role:Role", "export-dev-restore-task")
    restore_app = dev_run.named("azuread:index/application:Application", "export-dev-restore-app")
    restore_sp = dev_run.named("azuread:index/servicePrincipal:ServicePrincipal", "export-dev-restore-sp")
    assert plan.restore is not None
    assert plan.restore.task_role_arn == restore_role.outputs["arn"] == dev_run.outputs[Output.RESTORE_TASK_ROLE_ARN]
    assert plan.restore.client_id == restore_app.outputs["clientId"] != plan.client_id
    fics = {f.client_id: f for f in plan.federated_credentials}
    assert (fics[plan.restore.client_id].subject, fics[plan.restore.client_id].issuer) == (
        plan.restore.task_role_arn,
        plan.issuer,
    )
    assert sorted((t.database, t.container, t.partition_key_paths) for t in plan.restore.targets) == [
        ("restore-drills", "customers-drill", ("/customerId",)),
        ("restore-drills", "orders-drill", ("/customerId",)),
    ]
    writer = [a for a in plan.cosmos_assignments if a.principal_id == restore_sp.outputs["objectId"]]
    assert sorted(a.scope for a in writer) == [
        "/dbs/restore-drills/colls/customers-drill",
        "/dbs/restore-drills/colls/orders-drill",
    ]
    assert all(a.data_actions == contract.COSMOS_RESTORE_DATA_ACTIONS for a in writer)
    assert plan.restore.worker_environment == dev_run.outputs[Output.RESTORE_WORKER_ENVIRONMENT]


def test_restore_chain_yields_a_token_for_the_restore_service_principal(dev_run, sandbox):
    plan = plan_from_run(dev_run)
    running, credential = sandbox(plan)
    token = credential(restore=True).get_token("https://127.0.0.1/.default").token
    claims = running.entra_state.verify_access_token(token, "https://127.0.0.1")
    assert (
        claims["oid"]
        == dev_run.outputs[Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID]
        != dev_run.service_principal_object_id
    )
    (issued,) = running.sts_state.issued
    assert issued["sub"] == plan.restore.task_role_arn != plan.task_role_arn


def test_restore_fic_subject_wired_to_the_export_role_fails_with_aadsts700213(dev_run, sandbox):
    run = copy.deepcopy(dev_run)
    fic = run.named(FIC, "export-dev-restore-fic-ecs-task")
    fic.inputs["subject"] = run.task_role_arn  # the infrastructure mistake: the restore app trusts the export role
    plan = plan_from_run(run)
    _, credential = sandbox(plan)
    with pytest.raises(ClientAuthenticationError) as caught:
        credential(restore=True).get_token("https://127.0.0.1/.default")
    assert "AADSTS700213" in str(caught.value)
    # The export identity is unaffected.
    assert credential(restore=False).get_token("https://127.0.0.1/.default").token


def test_each_identity_reaches_only_its_own_containers(dev_run, sandbox, local_ca):
    plan = plan_from_run(dev_run)
    running, credential = sandbox(plan, cosmos=True)
    doc = {"id": "restored-1", "customerId": "cust-00001", "status": "restored"}

    def client(restore: bool) -> CosmosClient:
        return CosmosClient(
            running.cosmos.url + "/", credential=credential(restore), connection_verify=str(local_ca.bundle_file)
        )

    restore_client = client(restore=True)
    target = restore_client.get_database_client("restore-drills").get_container_client("orders-drill")
    assert target.upsert_item(dict(doc))["id"] == "restored-1"
    assert target.read_item("restored-1", partition_key="cust-00001")["status"] == "restored"
    # The restore identity on an exported source: 403, nothing written.
    source = restore_client.get_database_client(plan.cosmos_database).get_container_client("orders")
    with pytest.raises(cosmos_exceptions.CosmosHttpResponseError) as caught:
        source.upsert_item(dict(doc))
    assert caught.value.status_code == 403
    # The export identity on the target: 403 for a read and for a write.
    export_target = client(restore=False).get_database_client("restore-drills").get_container_client("orders-drill")
    with pytest.raises(cosmos_exceptions.CosmosHttpResponseError) as caught:
        export_target.read_item("restored-1", partition_key="cust-00001")
    assert caught.value.status_code == 403
    with pytest.raises(cosmos_exceptions.CosmosHttpResponseError) as caught:
        export_target.upsert_item(dict(doc, status="overwritten"))
    assert caught.value.status_code == 403
    assert target.read_item("restored-1", partition_key="cust-00001")["status"] == "restored"


def test_restore_environment_is_the_restore_tasks_with_local_endpoints(dev_run, sandbox):
    plan = plan_from_run(dev_run)
    running, _ = sandbox(plan)
    env = worker_environment(running, restore=True)
    assert {k: env[k] for k in plan.restore.worker_environment} == {
        **plan.restore.worker_environment,
        Env.COSMOS_ENDPOINT: running.cosmos.url + "/",
    }
    assert env["AWS_ACCESS_KEY_ID"] == RESTORE_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert worker_environment(running)["AWS_ACCESS_KEY_ID"] == EXPORT_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert env[Env.AZURE_CLIENT_ID] == plan.restore.client_id != worker_environment(running)[Env.AZURE_CLIENT_ID]
