"""The whole program: read config once, declare the components, export the outputs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_azure_native.cosmosdb as cosmosdb

from cosmos_export import contract, settings
from cosmos_export.contract import Output

from . import fan_out, naming, policies
from .alerting import Alerting, AlertingArgs
from .analytics import ANALYST_ROLE_KIND, Analytics, AnalyticsArgs, table_read_prefixes
from .analytics_config import RESULTS_PREFIX
from .azure_identity import WorkloadIdentity
from .bucket import ExportBucket
from .config import PROJECT, StackConfig, full_key, load_stack_config
from .cosmos_access import CosmosAccess
from .federation import OutboundFederation
from .operators import Operators, OperatorsArgs
from .operators_config import actions_of
from .restore_targets import RestoreTargets, RestoreTargetsArgs
from .task_role import TaskRole, TaskRoleArgs
from .worker_service import ExportLocation, RestoreTaskArgs, WorkerService


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


def restore_environment(c: StackConfig, export_environment: dict, *, client_id) -> dict:
    """The restore task's environment: the export's settings, its own client id, and where to restore."""
    r = c.restore
    return {
        **export_environment,
        **settings.environment(
            azure_client_id=client_id,
            restore_target_database=r.target_database,
            restore_targets=",".join(f"{s}={r.target_of(s)}" for s in c.cosmos.exported),
        ),
    }


#: The restore task role's fixed name suffix: export-<stack>-restore-task (naming.role_name).
RESTORE_ROLE_KIND = "restore-task"


def export_access(
    c: StackConfig, account_id: str, task_role_arn: str, restore_role_arn: str | None = None
) -> policies.ExportAccess:
    """Who may read, write and delete the exports: the worker's task role, and the restore role (read, and
    write: its IAM policy narrows that to drills/ and restores/; never delete); operator roles holding
    `status` read (their IAM policy narrows that to manifests, checkpoints and drill reports)."""
    deleters = [task_role_arn]
    if c.bucket.force_destroy:
        # forceDestroy empties the bucket on `pulumi destroy`: the CI deployer may delete (never read).
        deleters.append(f"arn:aws:iam::{account_id}:role/{naming.deployer_role_name(c.stack)}")
    users = (task_role_arn, *((restore_role_arn,) if restore_role_arn else ()))
    status_readers = tuple(
        naming.role_arn(account_id, c.stack, kind) for kind in c.operators.roles() if "status" in actions_of(kind)
    )
    # The fan-out's state machine reads its plan documents (its IAM policy narrows that to <prefix>/fan-out/).
    if c.schedule.fan_out is not None:
        status_readers += (naming.role_arn(account_id, c.stack, fan_out.ROLE_KIND),)
    analysts = (
        (naming.role_arn(account_id, c.stack, ANALYST_ROLE_KIND),)
        if analytics_on(c) and c.analytics.analyst_principals
        else ()
    )
    return policies.ExportAccess(
        read=users + status_readers,
        write=users,
        delete=tuple(deleters),
        analysts=analysts,
        analyst_read_prefixes=tuple(table_read_prefixes(list(exported_prefixes(c).values()))) if analysts else (),
        analyst_results_prefix=RESULTS_PREFIX if analysts else None,
    )


def analytics_on(c: StackConfig) -> bool:
    """The catalog exists when the worker writes the tables (currentState)."""
    return c.worker.current_state


def exported_prefixes(c: StackConfig) -> dict[str, str]:
    """Exported container -> its key prefix (layout.py's rule)."""
    containers = list(c.cosmos.exported)
    prefixes = policies.container_prefixes(
        prefix=c.bucket.export_prefix,
        account=c.cosmos.cosmos_account_name,
        database=c.cosmos.cosmos_database,
        containers=containers,
    )
    return dict(zip(containers, prefixes))


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
        access=export_access(
            c,
            account_id,
            task_role_arn,
            restore_role_arn=(naming.role_arn(account_id, c.stack, RESTORE_ROLE_KIND) if c.restore.enabled else None),
        ),
        results_expiry_days=c.analytics.athena_results_days if analytics_on(c) else None,
    )
    # Only with currentState (the worker writes the tables): the Glue catalog, Athena and the analyst role.
    analytics = (
        Analytics(
            name,
            AnalyticsArgs(
                stack=c.stack,
                account_id=account_id,
                region=c.region,
                config=c.analytics,
                bucket=c.bucket.bucket_name,
                containers=exported_prefixes(c),
                kms_key_arn=bucket.key_arn,
            ),
        )
        if analytics_on(c)
        else None
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
    # The second reader of the export (and writer of drills/ and restores/ only), beside the export task role.
    restore_role = restore_task_role(c, name, account_id=account_id, bucket=bucket) if c.restore.enabled else None
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
    restore = (
        build_restore(
            c, name, task_role=restore_role, account=account, issuer=federation.issuer, export_environment=environment
        )
        if restore_role
        else None
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
        restore=restore.task if restore else None,
        export_location=ExportLocation(c.bucket.bucket_name, c.bucket.export_prefix, bucket.key_arn),
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
            task_families=service.task_families,
            dlq_name=service.dlq_name,
            dlq_arn=service.dlq_arn,
            state_machine_arn=service.state_machine.state_machine_arn if service.state_machine else None,
            freshness_minutes=c.freshness_minutes,
            change_feed_mode=c.worker.change_feed_mode,
            backup_window_days=c.alerting.continuous_backup_days,
            backup_window_alarm_minutes=c.alerting.backup_window_alarm_minutes,
            alert_emails=c.alerting.alert_emails,
            alert_https_endpoints=c.alerting.alert_https_endpoints,
        ),
    )
    # Only with `operators`: a stack without them declares no operator role (and no empty component).
    operators = (
        Operators(
            name,
            OperatorsArgs(
                stack=c.stack,
                account_id=account_id,
                region=c.region,
                config=c.operators,
                cluster_arn=service.cluster_arn,
                cluster_name=service.cluster_name,
                log_group_arn=service.log_group_arn,
                execution_role_arn=service.execution_role_arn,
                export_family_arn=service.export_family_arn,
                export_task_role_arn=task_role.arn,
                bucket=c.bucket.bucket_name,
                prefix=c.bucket.export_prefix,
                container_prefixes=policies.container_prefixes(
                    prefix=c.bucket.export_prefix,
                    account=c.cosmos.cosmos_account_name,
                    database=c.cosmos.cosmos_database,
                    containers=c.cosmos.exported,
                ),
                kms_key_arn=bucket.key_arn,
                restore_family_arn=service.restore_family_arn,
                restore_task_role_arn=restore.task_role.arn if restore else None,
            ),
        )
        if c.operators.operators
        else None
    )

    def as_operator(action: str, command: pulumi.Output[str] | None) -> pulumi.Input[str] | None:
        """The run command, after the operator role's `aws sts assume-role` step where the stack has one."""
        return operators.with_assume_step(action, command) if operators else command

    outputs: dict[str, pulumi.Input] = {
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
        Output.RUN_TASK_COMMAND: as_operator("export", service.run_task_command),
        Output.COSMOS_ENDPOINT: cosmos_endpoint,
        Output.WORKER_ENVIRONMENT: environment,
        Output.COSMOS_ROLE_DEFINITION_ID: cosmos.role_definition_id,
        Output.COSMOS_LOCAL_AUTH_DISABLED: bool(account.disable_local_auth),
        Output.ALERT_TOPIC_ARN: alerting.topic_arn,
        Output.DASHBOARD_NAME: alerting.dashboard_name,
        Output.OPERATOR_ROLE_ARNS: operators.role_arns if operators else {},
    }
    # None where the stack has no analytics (currentState false) or no analyst role.
    outputs[Output.ANALYTICS_DATABASE] = analytics.database_name if analytics else None
    outputs[Output.ATHENA_WORKGROUP] = analytics.workgroup_name if analytics else None
    outputs[Output.ANALYST_ROLE_ARN] = analytics.analyst_role_arn if analytics else None
    if restore is not None:
        outputs.update(
            {
                Output.RESTORE_TASK_ROLE_ARN: restore.task_role.arn,
                Output.RESTORE_CLIENT_ID: restore.identity.client_id,
                Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID: restore.identity.object_id,
                Output.RESTORE_TASK_DEFINITION_ARN: service.restore_task_definition_arn,
                Output.RESTORE_WORKER_ENVIRONMENT: restore.task.environment,
                Output.COSMOS_RESTORE_ROLE_DEFINITION_ID: restore.cosmos.role_definition_id,
                Output.RUN_RESTORE_COMMAND: as_operator("restore", service.run_restore_command),
                Output.RUN_DRILL_COMMAND: as_operator("restore", service.run_drill_command),
            }
        )
    return outputs


@dataclass
class Restore:
    """The restore identity and its targets (declared only when `restore.enabled`)."""

    task_role: TaskRole
    identity: WorkloadIdentity
    cosmos: CosmosAccess
    targets: RestoreTargets
    task: RestoreTaskArgs


def restore_task_role(c: StackConfig, export_name: str, *, account_id: str, bucket: ExportBucket) -> TaskRole:
    """The restore identity's ECS task role: reads the export, writes only drills/ and restores/."""
    return TaskRole(
        f"{export_name}-restore",
        TaskRoleArgs(
            stack=c.stack,
            kind=RESTORE_ROLE_KIND,
            account_id=account_id,
            region=c.region,
            bucket_name=c.bucket.bucket_name,
            export_prefix=c.bucket.export_prefix,
            kms_key_arn=bucket.key_arn,
            max_token_seconds=c.identity.token_duration_seconds,
            write_prefixes=policies.restore_write_prefixes(
                prefix=c.bucket.export_prefix,
                account=c.cosmos.cosmos_account_name,
                database=c.cosmos.cosmos_database,
                containers=c.cosmos.exported,
            ),
            description="Cosmos DB restore and drill worker (ECS task role)",
        ),
    )


def build_restore(
    c: StackConfig, export_name: str, *, task_role: TaskRole, account, issuer, export_environment: dict
) -> Restore:
    """A second identity, separate from the export one: its own task role, Entra app and Cosmos role.

    It reads the export, writes only drills/ and restores/ under each exported container's prefix, and may
    write items only in the restore target containers (never a source container, its database or the account).
    The same components as the export identity's, given the restore's names, actions and scopes.
    """
    r = c.restore
    assert r.target_database is not None  # checked by the config
    name = f"{export_name}-restore"
    targets = RestoreTargets(
        name,
        RestoreTargetsArgs(
            account_name=c.cosmos.cosmos_account_name,
            resource_group=c.cosmos.cosmos_resource_group,
            source_database=c.cosmos.cosmos_database,
            target_database=r.target_database,
            targets={s: r.target_of(s) for s in c.cosmos.exported},
        ),
    )
    identity = WorkloadIdentity(
        name,
        c.identity.model_copy(
            update={
                "entra_app_display_name": f"{c.identity.entra_app_display_name}-restore",
                "additional_federated_credentials": [],
            }
        ),
        issuer=issuer,
        task_role_arn=task_role.arn,
        federation_enabled=c.cosmos.cosmos_access_enabled,
        description="ECS task role of the Cosmos DB restore and drill worker",
    )
    # The export's Cosmos section pointed at the targets: a custom role, one assignment per target container.
    on_targets = c.cosmos.model_copy(
        update={
            "cosmos_database": r.target_database,
            "cosmos_containers": list(targets.containers),
            "export_containers": None,
            "cosmos_role": "custom",
            "cosmos_role_scope": "container",
        }
    )
    cosmos = CosmosAccess(
        name,
        on_targets,
        account_id=account.id,
        location=account.location or "",
        principal_object_id=identity.object_id,
        principal_key=f"{PROJECT}/{c.stack}/restore",
        data_actions=contract.COSMOS_RESTORE_DATA_ACTIONS,
        role_label="writer",
        assignable="assignments",
        diagnostics=False,
        assignments_depend_on=list(targets.containers.values()),
    )
    environment = restore_environment(c, export_environment, client_id=identity.client_id)
    return Restore(
        task_role,
        identity,
        cosmos,
        targets,
        RestoreTaskArgs(
            task_role_arn=task_role.arn,
            environment=environment,
            sources=c.cosmos.exported,
            drill_schedule=r.drill_schedule,
        ),
    )


def main() -> None:
    config = read_config()  # raises before any resource exists
    for key, value in build(config).items():
        pulumi.export(key, value)
