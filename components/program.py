"""The whole program: read config once, declare the components, export the outputs."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_azure_native.cosmosdb as cosmosdb

from cosmos_export import settings
from cosmos_export.contract import Output

from . import naming, policies
from .alerting import Alerting, AlertingArgs
from .azure_identity import WorkloadIdentity
from .bucket import ExportBucket
from .config import PROJECT, StackConfig, full_key, load_stack_config
from .cosmos_access import CosmosAccess
from .federation import OutboundFederation
from .task_role import TaskRole, TaskRoleArgs
from .worker_service import WorkerService


def read_config() -> StackConfig:
    """Read and validate every key; raises ConfigError before anything is declared."""

    def get(key: str) -> str | None:
        namespace, _, name = full_key(key).partition(":")
        return pulumi.Config(namespace).get(name)

    from pulumi.runtime.config import CONFIG, get_config_env

    present = set(CONFIG.get()) | set(get_config_env())
    return load_stack_config(get, pulumi.get_stack(), present)


def worker_environment(c: StackConfig, *, tenant_id, client_id, cosmos_endpoint, kms_key_arn) -> dict:
    """The task definition's environment: plain settings, never a secret.

    Keyed by the worker's own field names (`settings.environment` turns them into
    the `contract.Env` variables and refuses a name the worker does not have);
    the worker section's tuning passes through under the same names.
    """
    return settings.environment(
        identity_mode="workload",
        aws_region=c.region,
        azure_tenant_id=tenant_id,
        azure_client_id=client_id,
        token_duration_seconds=c.identity.token_duration_seconds,
        cosmos_endpoint=cosmos_endpoint,
        cosmos_database=c.cosmos.cosmos_database,
        cosmos_containers=c.cosmos.exported,
        bucket=c.bucket.bucket_name,
        prefix=c.bucket.export_prefix,
        kms_key_arn=kms_key_arn,
        **c.worker.worker_settings(),
        stack=c.stack,  # the Stack dimension of the worker's metrics
    )


def export_access(c: StackConfig, account_id: str, task_role_arn: str) -> policies.ExportAccess:
    """Who may read, write and delete the exports: the worker's task role (a restore role joins here)."""
    deleters = [task_role_arn]
    if c.bucket.force_destroy:
        # forceDestroy empties the bucket on `pulumi destroy`: the CI deployer may delete (never read).
        deleters.append(f"arn:aws:iam::{account_id}:role/{naming.deployer_role_name(c.stack)}")
    return policies.ExportAccess(read=(task_role_arn,), write=(task_role_arn,), delete=tuple(deleters))


def build(c: StackConfig) -> dict[str, pulumi.Input]:
    """Declare every resource of the stack; returns the stack outputs."""
    account_id = aws.get_caller_identity().account_id
    account = cosmosdb.get_database_account(
        account_name=c.cosmos.cosmos_account_name, resource_group_name=c.cosmos.cosmos_resource_group
    )
    name = f"export-{c.stack}"

    if not account.disable_local_auth:
        pulumi.log.warn(
            f"Cosmos DB account {c.cosmos.cosmos_account_name} still accepts account keys (disableLocalAuth is false): "
            "this worker uses none, but anyone holding a key reads every container. Disable key auth on the "
            "account (az cosmosdb update --disable-local-auth true) once no client uses keys."
        )
    task_role_arn = naming.role_arn(account_id, c.stack, "task")  # fixed: the bucket and key policies name it
    bucket = ExportBucket(
        name,
        c.bucket,
        stack=c.stack,
        account_id=account_id,
        region=c.region,
        access=export_access(c, account_id, task_role_arn),
    )
    federation = OutboundFederation(name, c.identity.federation)
    task_role = TaskRole(
        name,
        TaskRoleArgs(
            stack=c.stack,
            account_id=account_id,
            region=c.region,
            bucket_name=c.bucket.bucket_name,
            export_prefix=c.bucket.export_prefix,
            kms_key_arn=bucket.key_arn,
            max_token_seconds=c.identity.token_duration_seconds,
        ),
    )
    identity = WorkloadIdentity(
        name,
        c.identity,
        issuer=federation.issuer,
        task_role_arn=task_role.arn,
        federation_enabled=c.cosmos.cosmos_access_enabled,
    )
    cosmos = CosmosAccess(
        name,
        c.cosmos,
        account_id=account.id,
        location=account.location or "",
        principal_object_id=identity.object_id,
        principal_key=f"{PROJECT}/{c.stack}",
    )
    cosmos_endpoint = account.document_endpoint.rstrip("/") + "/"
    environment = worker_environment(
        c,
        tenant_id=identity.tenant_id,
        client_id=identity.client_id,
        cosmos_endpoint=cosmos_endpoint,
        kms_key_arn=bucket.key_arn,
    )
    service = WorkerService(
        name,
        c.worker,
        c.schedule,
        stack=c.stack,
        account_id=account_id,
        region=c.region,
        task_role_arn=task_role.arn,
        environment=environment,
    )
    alerting = Alerting(
        name,
        AlertingArgs(
            stack=c.stack,
            account_id=account_id,
            region=c.region,
            cosmos_account=c.cosmos.cosmos_account_name,
            database=c.cosmos.cosmos_database,
            containers=c.cosmos.exported,
            task_family=service.task_family,
            dlq_name=service.dlq_name,
            dlq_arn=service.dlq_arn,
            freshness_minutes=c.freshness_minutes,
            change_feed_mode=c.worker.change_feed_mode,
            backup_window_days=c.alerting.continuous_backup_days,
            backup_window_alarm_minutes=c.alerting.backup_window_alarm_minutes,
            alert_emails=c.alerting.alert_emails,
            alert_https_endpoints=c.alerting.alert_https_endpoints,
        ),
    )
    return {
        Output.BUCKET: bucket.bucket_name,
        Output.PREFIX: c.bucket.export_prefix,
        Output.KMS_KEY_ARN: bucket.key_arn,
        Output.TASK_ROLE_ARN: task_role.arn,
        Output.EXECUTION_ROLE_ARN: service.execution_role_arn,
        Output.ISSUER: federation.issuer,
        Output.TENANT_ID: identity.tenant_id,
        Output.CLIENT_ID: identity.client_id,
        Output.SERVICE_PRINCIPAL_OBJECT_ID: identity.object_id,
        Output.CLUSTER: service.cluster_name,
        Output.TASK_DEFINITION_ARN: service.task_definition_arn,
        Output.RUN_TASK_COMMAND: service.run_task_command,
        Output.COSMOS_ENDPOINT: cosmos_endpoint,
        Output.WORKER_ENVIRONMENT: environment,
        Output.COSMOS_ROLE_DEFINITION_ID: cosmos.role_definition_id,
        Output.COSMOS_LOCAL_AUTH_DISABLED: bool(account.disable_local_auth),
        Output.ALERT_TOPIC_ARN: alerting.topic_arn,
        Output.DASHBOARD_NAME: alerting.dashboard_name,
    }


def main() -> None:
    config = read_config()  # raises before any resource exists
    for key, value in build(config).items():
        pulumi.export(key, value)
