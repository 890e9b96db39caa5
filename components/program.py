"""The whole program: read config once, declare the components, export the outputs."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_azure_native.cosmosdb as cosmosdb
from cosmos_export import contract
from cosmos_export.contract import Env, Output

from . import naming, policies
from .azure_identity import WorkloadIdentity, WorkloadIdentityArgs
from .bucket import ExportBucket, ExportBucketArgs
from .config import PROJECT, StackConfig, full_key, load_stack_config
from .cosmos_access import CosmosAccess, CosmosAccessArgs
from .federation import OutboundFederation
from .task_role import TaskRole, TaskRoleArgs
from .worker_service import WorkerService, WorkerServiceArgs


def read_config() -> StackConfig:
    """Read and validate every key; raises ConfigError before anything is declared."""
    def get(key: str) -> str | None:
        namespace, _, name = full_key(key).partition(":")
        return pulumi.Config(namespace).get(name)
    from pulumi.runtime.config import CONFIG, get_config_env

    present = set(CONFIG.get()) | set(get_config_env())
    return load_stack_config(get, pulumi.get_stack(), present)


def worker_environment(c: StackConfig, *, tenant_id, client_id, cosmos_endpoint, kms_key_arn) -> dict:
    """The task definition's environment: plain settings, never a secret."""
    return {
        Env.IDENTITY_MODE: "workload",
        Env.AWS_REGION: c.region,
        Env.AZURE_TENANT_ID: tenant_id,
        Env.AZURE_CLIENT_ID: client_id,
        Env.COSMOS_ENDPOINT: cosmos_endpoint,
        Env.COSMOS_DATABASE: c.cosmos_database,
        Env.COSMOS_CONTAINERS: ",".join(c.exported),
        Env.BUCKET: c.bucket_name,
        Env.PREFIX: c.export_prefix,
        Env.KMS_KEY_ARN: kms_key_arn,
        Env.MIN_CONSISTENCY: c.min_consistency,
        Env.CHANGE_FEED_MODE: c.change_feed_mode,
        Env.PRIORITY: c.priority,
        Env.CONCURRENCY: str(c.concurrency),
        Env.PART_SIZE_MB: str(c.part_size_mb),
        Env.COMPRESSION: c.compression,
        Env.TOKEN_DURATION_SECONDS: str(c.token_duration_seconds),
    }


def export_access(c: StackConfig, account_id: str, task_role_arn: str) -> policies.ExportAccess:
    """Who may read, write and delete the exports: the worker's task role (a restore role joins here)."""
    deleters = [task_role_arn]
    if c.force_destroy:
        # forceDestroy empties the bucket on `pulumi destroy`: the CI deployer may delete (never read).
        deleters.append(f"arn:aws:iam::{account_id}:role/{naming.deployer_role_name(c.stack)}")
    return policies.ExportAccess(read=(task_role_arn,), write=(task_role_arn,), delete=tuple(deleters))


def build(c: StackConfig) -> dict[str, pulumi.Input]:
    """Declare every resource of the stack; returns the stack outputs."""
    account_id = aws.get_caller_identity().account_id
    account = cosmosdb.get_database_account(account_name=c.cosmos_account_name,
                                            resource_group_name=c.cosmos_resource_group)
    name = f"export-{c.stack}"

    if not account.disable_local_auth:
        pulumi.log.warn(
            f"Cosmos DB account {c.cosmos_account_name} still accepts account keys (disableLocalAuth is false): "
            "this worker uses none, but anyone holding a key reads every container. Disable key auth on the "
            "account (az cosmosdb update --disable-local-auth true) once no client uses keys.")
    task_role_arn = naming.role_arn(account_id, c.stack, "task")
    bucket = ExportBucket(name, ExportBucketArgs(
        stack=c.stack, bucket_name=c.bucket_name, export_prefix=c.export_prefix, account_id=account_id, region=c.region,
        retention_days=c.retention_days, noncurrent_version_expiration_days=c.noncurrent_version_expiration_days,
        abort_incomplete_multipart_days=c.abort_incomplete_multipart_days, transition_days=c.transition_days,
        transition_storage_class=c.transition_storage_class, object_lock=c.object_lock,
        audit_trail=c.audit_trail, audit_retention_days=c.audit_retention_days, force_destroy=c.force_destroy,
        access=export_access(c, account_id, task_role_arn),
    ))
    federation = OutboundFederation(name, c.federation)
    task_role = TaskRole(name, TaskRoleArgs(
        stack=c.stack, account_id=account_id, region=c.region, bucket_name=c.bucket_name,
        export_prefix=c.export_prefix, kms_key_arn=bucket.key_arn, max_token_seconds=c.token_duration_seconds,
    ))
    identity = WorkloadIdentity(name, WorkloadIdentityArgs(
        display_name=c.entra_app_display_name, issuer=federation.issuer, task_role_arn=task_role.arn,
        federation_enabled=c.cosmos_access_enabled, additional=c.additional_federated_credentials,
        owners=c.entra_app_owners,
    ))
    cosmos = CosmosAccess(name, CosmosAccessArgs(
        account_id=account.id, account_name=c.cosmos_account_name, resource_group=c.cosmos_resource_group,
        location=account.location or "", database=c.cosmos_database, containers=c.exported,
        principal_object_id=identity.object_id, principal_key=f"{PROJECT}/{c.stack}",
        role=c.cosmos_role, scope_level=c.cosmos_role_scope, access_enabled=c.cosmos_access_enabled,
        workspace_id=c.log_analytics_workspace_id, workspace_retention_days=c.log_analytics_retention_days,
    ))
    cosmos_endpoint = account.document_endpoint.rstrip("/") + "/"
    environment = worker_environment(c, tenant_id=identity.tenant_id, client_id=identity.client_id,
                                     cosmos_endpoint=cosmos_endpoint, kms_key_arn=bucket.key_arn)
    service = WorkerService(name, WorkerServiceArgs(
        stack=c.stack, account_id=account_id, region=c.region, task_role_arn=task_role.arn, environment=environment,
        command=["run", "--mode", c.export_mode], cpu=c.cpu, memory=c.memory, architecture=c.architecture,
        log_retention_days=c.log_retention_days, vpc_id=c.vpc_id, subnet_ids=c.subnet_ids,
        assign_public_ip=c.assign_public_ip, schedule=c.schedule, schedule_time_zone=c.schedule_time_zone,
        schedule_enabled=c.schedule_enabled, retry_attempts=c.schedule_retry_attempts,
        max_event_age_seconds=c.schedule_max_event_age_seconds,
    ))
    return {
        Output.BUCKET: bucket.bucket_name,
        Output.PREFIX: c.export_prefix,
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
    }


def main() -> None:
    config = read_config()  # raises before any resource exists
    for key, value in build(config).items():
        pulumi.export(key, value)
