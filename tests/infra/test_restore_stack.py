"""The restore identity, its targets and its tasks, for every stack file (all of them enable `restore:`).

What must hold: the restore identity is a second principal (own task role, own Entra app and federated
credential, own Cosmos role) that writes items only in the target containers and only drills/ and
restores/ in S3; the export identity stays exactly as read-only as before; a stack without `restore`
declares none of it; bad restore config is refused before anything is declared.
"""

from __future__ import annotations

import json

import pytest

from components import policies
from components.config import ConfigError, load_stack_config
from cosmos_export import contract
from cosmos_export.contract import Env, Output
from sandbox import mocked_stack
from sandbox.mocked_stack import (
    DEFAULT_DEFINITION,
    DEFAULT_PARTITION_KEY,
    SOURCE_DEFINITIONS,
    SOURCE_PARTITION_KEYS,
    WITHOUT_RESTORE,
    run_stack,
    stack_config,
)
from tests.infra.conftest import cached_run

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
APP = "azuread:index/application:Application"
SP = "azuread:index/servicePrincipal:ServicePrincipal"
FIC = "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
ROLE_DEFINITION = "azure-native:cosmosdb:SqlResourceSqlRoleDefinition"
ASSIGNMENT = "azure-native:cosmosdb:SqlResourceSqlRoleAssignment"
CONTAINER = "azure-native:cosmosdb:SqlResourceSqlContainer"
DATABASE = "azure-native:cosmosdb:SqlResourceSqlDatabase"
SCHEDULE = "aws:scheduler/schedule:Schedule"
RESTORE_OUTPUTS = {
    Output.RESTORE_TASK_ROLE_ARN,
    Output.RESTORE_CLIENT_ID,
    Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID,
    Output.RESTORE_TASK_DEFINITION_ARN,
    Output.RESTORE_WORKER_ENVIRONMENT,
    Output.COSMOS_RESTORE_ROLE_DEFINITION_ID,
    Output.RUN_RESTORE_COMMAND,
    Output.RUN_DRILL_COMMAND,
}


def restore_block(run) -> dict:
    return json.loads(run.config["cosmos-s3-export:restore"])


def exported(run) -> list[str]:
    return run.worker_environment[Env.COSMOS_CONTAINERS].split(",")


def inline_policy(run, role) -> dict:
    (policy,) = [r for r in run.of_type(ROLE_POLICY) if r.inputs["role"] == role.outputs["id"]]
    return json.loads(policy.inputs["policy"])


# --- The restore task role ------------------------------------------------------------------------


def test_restore_task_role_trust_is_the_export_roles(every_stack):
    run = every_stack
    export_role = run.named(ROLE, f"export-{run.stack}-task")
    restore_role = run.named(ROLE, f"export-{run.stack}-restore-task")
    assert restore_role.outputs["arn"] == run.outputs[Output.RESTORE_TASK_ROLE_ARN] != run.task_role_arn
    assert restore_role.inputs["path"] == export_role.inputs["path"] == f"/cosmos-s3-export/{run.stack}/"
    assert restore_role.inputs["name"] == f"export-{run.stack}-restore-task"
    assert restore_role.inputs["permissionsBoundary"] == export_role.inputs["permissionsBoundary"]
    assert (
        json.loads(restore_role.inputs["assumeRolePolicy"])
        == json.loads(export_role.inputs["assumeRolePolicy"])
        == policies.ecs_tasks_trust_policy(mocked_stack._ACCOUNTS[run.stack], run.config["aws:region"])
    )


def test_restore_task_role_reads_the_export_and_writes_only_drills_and_restores(every_stack):
    run = every_stack
    role = run.named(ROLE, f"export-{run.stack}-restore-task")
    bucket, prefix, key = run.bucket, run.prefix, run.kms_key_arn
    account = run.config["cosmos-s3-export:cosmosAccountName"]
    db = run.worker_environment[Env.COSMOS_DATABASE]
    roots = [f"arn:aws:s3:::{bucket}/{prefix}/{account}/{db}/{c}" for c in exported(run)]
    assert inline_policy(run, role)["Statement"] == [
        {
            "Sid": "ListExportPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        },
        {
            "Sid": "ReadExportObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
        },
        {
            "Sid": "WriteDrillReportsAndRestoreProgress",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [
                f"{root}/{folder}/*" for root in roots for folder in (contract.DRILLS_DIR, contract.RESTORES_DIR)
            ],
        },
        {
            "Sid": "ExportKeyThroughS3Only",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{run.config['aws:region']}.amazonaws.com"}},
        },
        {
            "Sid": "MintAzureFederationToken",
            "Effect": "Allow",
            "Action": "sts:GetWebIdentityToken",
            "Resource": "*",
            "Condition": {
                "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": [contract.TOKEN_EXCHANGE_AUDIENCE]},
                "NumericLessThanEquals": {
                    "sts:DurationSeconds": int(run.worker_environment[Env.TOKEN_DURATION_SECONDS])
                },
                "StringEquals": {"sts:SigningAlgorithm": contract.SIGNING_ALGORITHM},
            },
        },
    ]
    # The same token conditions as the export role's, from one builder.
    export_token = inline_policy(run, run.named(ROLE, f"export-{run.stack}-task"))["Statement"][-1]
    assert export_token == inline_policy(run, role)["Statement"][-1]


# --- The restore Entra identity -------------------------------------------------------------------


def test_restore_app_has_its_own_fic_for_the_restore_role_exactly(every_stack):
    run = every_stack
    n = f"export-{run.stack}-restore"
    app, sp = run.named(APP, f"{n}-app"), run.named(SP, f"{n}-sp")
    fic = run.named(FIC, f"{n}-fic-ecs-task").inputs
    assert fic["applicationId"] == app.outputs["id"]
    assert fic["subject"] == run.outputs[Output.RESTORE_TASK_ROLE_ARN]
    assert fic["issuer"] == run.outputs[Output.ISSUER]
    assert fic["audiences"] == [contract.TOKEN_EXCHANGE_AUDIENCE]
    # One credential on the restore app; the export app does not trust the restore role.
    assert [f.inputs["subject"] for f in run.of_type(FIC) if f.inputs["applicationId"] == app.outputs["id"]] == [
        fic["subject"]
    ]
    export_app = run.named(APP, f"export-{run.stack}-app")
    assert fic["subject"] not in [
        f.inputs["subject"] for f in run.of_type(FIC) if f.inputs["applicationId"] == export_app.outputs["id"]
    ]
    assert app.inputs["displayName"] == f"cosmos-s3-export-{run.stack}-restore"
    assert sp.inputs["clientId"] == app.outputs["clientId"] == run.outputs[Output.RESTORE_CLIENT_ID]
    assert (
        sp.outputs["objectId"]
        == run.outputs[Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID]
        != run.service_principal_object_id
    )


# --- Cosmos DB: the writer role, on the targets only ----------------------------------------------


def test_restore_role_has_exactly_the_restore_actions_and_only_the_targets_as_scopes(every_stack):
    run = every_stack
    definition = run.named(ROLE_DEFINITION, f"export-{run.stack}-restore-role")
    account_id = run.outputs[Output.COSMOS_ROLE_DEFINITION_ID].split("/sqlRoleDefinitions/")[0]
    block = restore_block(run)
    target_scopes = [
        f"{account_id}/dbs/{block['targetDatabase']}/colls/{block['targetContainers'][c]}" for c in exported(run)
    ]
    assert definition.inputs["permissions"] == [{"dataActions": list(contract.COSMOS_RESTORE_DATA_ACTIONS)}]
    assert definition.inputs["type"] == "CustomRole"
    assert definition.inputs["assignableScopes"] == target_scopes
    assert definition.outputs["id"] == run.outputs[Output.COSMOS_RESTORE_ROLE_DEFINITION_ID]

    restore_sp = run.outputs[Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID]
    mine = [a for a in run.cosmos_role_assignments() if a["principal_id"] == restore_sp]
    assert sorted(a["scope"] for a in mine) == sorted(target_scopes)
    assert all(a["role_definition_id"] == definition.outputs["id"] for a in mine)
    # Never a source container, the source database or the account.
    db = run.worker_environment[Env.COSMOS_DATABASE]
    forbidden = {
        f"{account_id}/dbs/{db}/colls/{c}" for c in json.loads(run.config["cosmos-s3-export:cosmosContainers"])
    }
    forbidden |= {f"{account_id}/dbs/{db}", f"{account_id}/dbs/{block['targetDatabase']}", account_id}
    assert not forbidden & {a["scope"] for a in mine}


def test_export_identity_stays_read_only_and_off_the_targets(every_stack):
    run = every_stack
    export_sp = run.service_principal_object_id
    theirs = [a for a in run.cosmos_role_assignments() if a["principal_id"] == export_sp]
    assert len(theirs) == len(exported(run))
    assert all(set(a["data_actions"]) == set(contract.COSMOS_DATA_ACTIONS) for a in theirs)
    block = restore_block(run)
    targets = {f"/dbs/{block['targetDatabase']}/colls/{t}" for t in block["targetContainers"].values()}
    assert not targets & {a["relative_scope"] for a in theirs}
    export_definition = run.named(ROLE_DEFINITION, f"export-{run.stack}-role")
    assert export_definition.inputs["permissions"] == [{"dataActions": list(contract.COSMOS_DATA_ACTIONS)}]
    # Every assignment is to one of the two principals, each with its own role.
    assert {a["principal_id"] for a in run.cosmos_role_assignments()} == {
        export_sp,
        run.outputs[Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID],
    }


def test_revoke_switch_removes_the_restore_fic_and_assignments_too():
    after = run_stack("staging", {"cosmosAccessEnabled": False})
    assert after.of_type(FIC) == [] and after.of_type(ASSIGNMENT) == []
    # The restore identity itself, its role definition and its targets stay (turning access back on is a no-op).
    assert after.named(APP, "export-staging-restore-app") and after.named(
        ROLE_DEFINITION, "export-staging-restore-role"
    )
    assert len(after.of_type(CONTAINER)) == 3
    assert after.outputs[Output.RESTORE_CLIENT_ID] == run_stack("staging").outputs[Output.RESTORE_CLIENT_ID]


# --- Target containers ----------------------------------------------------------------------------


def test_targets_are_declared_with_the_sources_definition(every_stack):
    run = every_stack
    block = restore_block(run)
    containers = {r.inputs["containerName"]: r.inputs for r in run.of_type(CONTAINER)}
    assert set(containers) == {block["targetContainers"][c] for c in exported(run)}
    for source in exported(run):
        declared = containers[block["targetContainers"][source]]
        assert declared["databaseName"] == block["targetDatabase"]
        assert declared["accountName"] == run.config["cosmos-s3-export:cosmosAccountName"]
        assert declared["resourceGroupName"] == run.config["cosmos-s3-export:cosmosResourceGroup"]
        assert declared["resource"]["id"] == declared["containerName"]
        assert declared["resource"]["partitionKey"] == SOURCE_PARTITION_KEYS.get(source, DEFAULT_PARTITION_KEY)
        # Indexing policy, default TTL and unique keys as the source reports them (what a drill compares).
        assert {
            k: v for k, v in declared["resource"].items() if k not in ("id", "partitionKey")
        } == SOURCE_DEFINITIONS.get(source, DEFAULT_DEFINITION)
    # A scratch database is declared; the source database never is.
    databases = [r.inputs["databaseName"] for r in run.of_type(DATABASE)]
    source_db = run.worker_environment[Env.COSMOS_DATABASE]
    assert databases == ([] if block["targetDatabase"] == source_db else [block["targetDatabase"]])


def test_hierarchical_partition_key_is_kept():
    staging = cached_run("staging")  # the stack that exports `events` (MultiHash key in the mocks)
    (events,) = [r for r in staging.of_type(CONTAINER) if r.inputs["containerName"] == "events-drill"]
    assert events.inputs["resource"]["partitionKey"] == {
        "paths": ["/tenantId", "/deviceId"],
        "kind": "MultiHash",
        "version": 2,
    }


def test_a_source_without_partition_key_is_refused():
    from types import SimpleNamespace as NS

    from components.restore_targets import partition_key_of

    with pytest.raises(ValueError, match="source container 'orders' reports no partition key paths"):
        partition_key_of(NS(name="orders", resource=NS(partition_key=NS(paths=[], kind="Hash", version=2))))


# --- The restore task definition, schedules and outputs -------------------------------------------


def test_restore_task_definition_is_the_same_image_hardened_with_the_restore_environment(every_stack):
    run = every_stack
    td, export_td = run.task_definition("-restore"), run.task_definition()
    assert td.outputs["arn"] == run.outputs[Output.RESTORE_TASK_DEFINITION_ARN]
    assert td.inputs["taskRoleArn"] == run.outputs[Output.RESTORE_TASK_ROLE_ARN]
    assert td.inputs["executionRoleArn"] == export_td.inputs["executionRoleArn"]
    (container,) = json.loads(td.inputs["containerDefinitions"])
    (export_container,) = json.loads(export_td.inputs["containerDefinitions"])
    assert container["image"] == export_container["image"]
    assert container["command"] == ["drill"]
    assert container["readonlyRootFilesystem"] is True and container["user"] == export_container["user"] != "root"
    assert container["linuxParameters"] == {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}}
    assert "secrets" not in container
    env = run.task_definition_environment("-restore")
    assert env == run.outputs[Output.RESTORE_WORKER_ENVIRONMENT]
    block = restore_block(run)
    assert env == {
        **run.worker_environment,
        Env.AZURE_CLIENT_ID: run.outputs[Output.RESTORE_CLIENT_ID],
        Env.RESTORE_TARGET_DATABASE: block["targetDatabase"],
        Env.RESTORE_TARGETS: ",".join(f"{c}={block['targetContainers'][c]}" for c in exported(run)),
    }


def test_a_drill_schedule_per_exported_container_runs_the_restore_task_with_its_own_scheduler_role(every_stack):
    run = every_stack
    n = f"export-{run.stack}"
    role = run.named(ROLE, f"{n}-restore-scheduler")
    drills = [r for r in run.of_type(SCHEDULE) if r.name.startswith(f"{n}-drill-schedule-")]
    assert sorted(r.name for r in drills) == sorted(f"{n}-drill-schedule-{c}" for c in exported(run))
    for source in exported(run):
        sched = run.named(SCHEDULE, f"{n}-drill-schedule-{source}").inputs
        assert sched["scheduleExpression"] == restore_block(run)["drillSchedule"]
        assert sched["state"] == "ENABLED"
        target = sched["target"]
        assert target["ecsParameters"]["taskDefinitionArn"] == run.outputs[Output.RESTORE_TASK_DEFINITION_ARN]
        # The templated ECS target's input is the RunTask TaskOverride: `drill -c <source>`.
        assert json.loads(target["input"]) == {
            "containerOverrides": [{"name": "worker", "command": ["drill", "-c", source]}]
        }
        assert target["deadLetterConfig"] == {"arn": run.one("aws:sqs/queue:Queue").outputs["arn"]}
        assert target["roleArn"] == role.outputs["arn"]
    statements = {s["Sid"]: s for s in inline_policy(run, role)["Statement"]}
    family = run.outputs[Output.RESTORE_TASK_DEFINITION_ARN].rsplit(":", 1)[0]
    assert statements["RunWorkerTask"]["Resource"] == [family, f"{family}:*"]
    assert statements["PassWorkerRoles"]["Resource"] == sorted(
        [run.outputs[Output.RESTORE_TASK_ROLE_ARN], run.outputs[Output.EXECUTION_ROLE_ARN]]
    )
    # The export scheduler can neither start the restore task nor pass the restore role.
    export_statements = {s["Sid"]: s for s in inline_policy(run, run.named(ROLE, f"{n}-scheduler"))["Statement"]}
    assert run.outputs[Output.RESTORE_TASK_ROLE_ARN] not in export_statements["PassWorkerRoles"]["Resource"]
    assert family not in export_statements["RunWorkerTask"]["Resource"]
    # The export schedules carry no override: the task definitions' own commands run.
    assert "input" not in run.named(SCHEDULE, f"{n}-schedule").inputs["target"]


def test_no_drill_schedule_without_drill_schedule_config():
    block = {**json.loads(stack_config("dev")["cosmos-s3-export:restore"]), "drillSchedule": None}
    run = run_stack("dev", {"restore": {k: v for k, v in block.items() if v is not None}})
    assert not [r for r in run.of_type(SCHEDULE) if "drill" in r.name]
    assert not [r for r in run.of_type(ROLE) if r.name == "export-dev-restore-scheduler"]
    assert run.outputs[Output.RUN_DRILL_COMMAND]  # drills by hand still work


def test_snapshot_schedule_runs_full_snapshots_as_the_export_role(every_stack):
    run = every_stack
    n = f"export-{run.stack}"
    td = run.task_definition("-snapshot")
    (container,) = json.loads(td.inputs["containerDefinitions"])
    assert container["command"] == ["run", "--mode", "snapshot"]
    assert td.inputs["taskRoleArn"] == run.task_role_arn
    assert run.task_definition_environment("-snapshot") == run.worker_environment
    sched = run.named(SCHEDULE, f"{n}-snapshot-schedule").inputs
    assert sched["scheduleExpression"] == run.config["cosmos-s3-export:snapshotSchedule"]
    assert (
        sched["scheduleExpressionTimezone"] == run.named(SCHEDULE, f"{n}-schedule").inputs["scheduleExpressionTimezone"]
    )
    assert sched["target"]["ecsParameters"]["taskDefinitionArn"] == td.outputs["arn"]
    assert sched["target"]["roleArn"] == run.named(ROLE, f"{n}-scheduler").outputs["arn"]
    statements = {s["Sid"]: s for s in inline_policy(run, run.named(ROLE, f"{n}-scheduler"))["Statement"]}
    export_family, snapshot_family = (
        run.task_definition(s).outputs["arn"].rsplit(":", 1)[0] for s in ("", "-snapshot")
    )
    assert statements["RunWorkerTask"]["Resource"] == [
        export_family,
        f"{export_family}:*",
        snapshot_family,
        f"{snapshot_family}:*",
    ]


def test_run_restore_and_drill_commands(every_stack):
    run = every_stack
    arn = run.outputs[Output.RESTORE_TASK_DEFINITION_ARN]
    # The last line: the operator's `aws sts assume-role` step comes first (tests/infra/test_operators.py).
    drill, restore = (run.outputs[k].splitlines()[-1] for k in (Output.RUN_DRILL_COMMAND, Output.RUN_RESTORE_COMMAND))
    export_cmd = run.outputs[Output.RUN_TASK_COMMAND].splitlines()[-1]
    base = export_cmd.replace(run.outputs[Output.TASK_DEFINITION_ARN], arn)
    assert (
        drill
        == base
        + """ --overrides '{"containerOverrides":[{"name":"worker","command":["drill","-c","<SOURCE_CONTAINER>"]}]}'"""
    )
    assert (
        restore
        == base
        + """ --overrides '{"containerOverrides":[{"name":"worker","command":["restore","-c","<SOURCE_CONTAINER>"]}]}'"""
    )


# --- Off by default, and refused when wrong -------------------------------------------------------


@pytest.mark.parametrize("stack", mocked_stack.stack_names())
def test_a_stack_without_restore_declares_none_of_it(stack):
    run = run_stack(stack, WITHOUT_RESTORE)
    assert not RESTORE_OUTPUTS & set(run.outputs)
    assert not run.of_type(CONTAINER) and not run.of_type(DATABASE)
    assert len(run.of_type(APP)) == len(run.of_type(SP)) == len(run.of_type(ROLE_DEFINITION)) == 1
    assert [r.name for r in run.of_type("aws:ecs/taskDefinition:TaskDefinition")] == [f"export-{stack}-task-definition"]
    assert [r.name for r in run.of_type(SCHEDULE)] == [f"export-{stack}-schedule"]
    assert not [r for r in run.resources if "restore" in r.name]


def test_restore_block_present_but_disabled_declares_none_of_it():
    block = {"enabled": False, "targetDatabase": "restore-drills"}  # incomplete on purpose: not checked while off
    run = run_stack("dev", {"restore": block, "operators": None})  # dev's operators include `restore`
    assert not RESTORE_OUTPUTS & set(run.outputs) and not run.of_type(CONTAINER)


def _problems(stack: str = "dev", **overrides) -> list[str]:
    cfg = stack_config(stack, overrides)
    with pytest.raises(ConfigError) as caught:
        load_stack_config(cfg.get, stack, cfg.keys())
    return caught.value.problems


def test_every_restore_problem_is_reported_at_once_with_key_value_and_fix():
    found = _problems(
        restore={
            "enabled": True,
            "targetDatabase": "orders",
            "targetContainers": {"orders": "events", "customers": "events", "ordrs": "x"},
        }
    )
    value = '{"orders": "events", "customers": "events", "ordrs": "x"}'
    assert found == [
        f"cosmos-s3-export:restore.targetContainers = {value}: 'ordrs' not exported (exported: ['orders', "
        "'customers']); remove them or fix the spelling",
        f"cosmos-s3-export:restore.targetContainers = {value}: target(s) 'events' named for more than one source; "
        "give each exported container its own target",
        f"cosmos-s3-export:restore.targetContainers = {value}: target(s) 'events', 'events' are source containers of "
        "database 'orders': a restore must never write a source; choose other names or another targetDatabase",
    ]


def test_a_target_equal_to_its_own_source_is_refused():
    (msg,) = _problems(
        restore={
            "enabled": True,
            "targetDatabase": "orders",
            "targetContainers": {"orders": "orders", "customers": "customers-drill"},
        }
    )
    assert "target(s) 'orders' are source containers of database 'orders': a restore must never write a source" in msg


def test_the_same_names_in_another_database_are_fine():
    cfg = stack_config(
        "dev",
        {
            "restore": {
                "enabled": True,
                "targetDatabase": "orders-copy",
                "targetContainers": {"orders": "orders", "customers": "customers"},
            }
        },
    )
    assert load_stack_config(cfg.get, "dev", cfg.keys()).restore.target_of("orders") == "orders"


def test_missing_targets_and_database_are_refused():
    assert _problems(restore={"enabled": True, "targetContainers": {"orders": "orders-drill"}}) == [
        "cosmos-s3-export:restore.targetDatabase = null: restore is enabled but names no target database; set it to "
        "a scratch database, e.g. 'restore-drills' (the program creates it)",
        'cosmos-s3-export:restore.targetContainers = {"orders": "orders-drill"}: no target for exported container(s) '
        "'customers'; add one entry per exported container, e.g. {customers: customers-restore}",
    ]


def test_bad_schedules_names_and_keys_are_refused():
    found = _problems(
        snapshotSchedule="cron(0 3 * * *)",
        restore={
            "enabled": True,
            "targetDatabase": "a/b",
            "targetContainers": {"orders": "x#y", "customers": "c"},
            "drillSchedule": "weekly",
            "drillscheduel": "x",
        },
    )
    assert found == [
        "cosmos-s3-export:restore.targetDatabase = \"a/b\": a Cosmos DB database id must not contain '/'",
        'cosmos-s3-export:restore.targetContainers = {"orders": "x#y", "customers": "c"}: invalid Cosmos DB '
        "container id(s): 'x#y' (must not contain '#')",
        'cosmos-s3-export:restore.drillSchedule = "weekly": EventBridge Scheduler would refuse it: must be cron(...), '
        "rate(...) or at(...); e.g. 'cron(0 5 ? * SUN *)' or 'rate(7 days)'",
        "cosmos-s3-export:restore.drillscheduel is not a known setting: remove it or fix its spelling "
        "(see 'Config keys' in README.md)",
        'cosmos-s3-export:snapshotSchedule = "cron(0 3 * * *)": EventBridge Scheduler would refuse it: a cron '
        "expression has 6 fields (minutes hours day-of-month month day-of-week year), this one has 5; "
        "e.g. 'cron(15 2 * * ? *)' or 'rate(6 hours)'",
    ]


def test_snapshot_schedule_with_snapshot_mode_and_database_scope_beside_targets_are_refused():
    assert _problems(exportMode="snapshot") == [
        "cosmos-s3-export:snapshotSchedule = \"cron(0 3 * * ? *)\": exportMode is 'snapshot', so every scheduled run "
        "is already a full snapshot; unset snapshotSchedule or use exportMode 'incremental'"
    ]
    assert _problems("prod", cosmosRoleScope="database") == [
        'cosmos-s3-export:restore.targetDatabase = "orders": is the source database, where cosmosRoleScope '
        "'database' would let the export identity read the restore targets too; use another targetDatabase or "
        "cosmosRoleScope 'container'"
    ]


def test_bad_restore_config_fails_before_any_resource_is_declared(monkeypatch):
    declared = []
    original = mocked_stack._Mocks.new_resource
    monkeypatch.setattr(
        mocked_stack._Mocks, "new_resource", lambda self, args: declared.append(args.name) or original(self, args)
    )
    with pytest.raises(ConfigError, match="cosmos-s3-export:restore.targetContainers"):
        run_stack(
            "dev",
            {
                "restore": {
                    "enabled": True,
                    "targetDatabase": "orders",
                    "targetContainers": {"orders": "customers", "customers": "orders"},
                }
            },
        )
    assert declared == []
    run_stack("dev")  # the same hook does see what a good config declares
    assert "export-dev-restore-container-orders-drill" in declared


def test_restore_components_declare_exactly_their_children():
    """The restore identity is the export's components again (same types), under export-<stack>-restore."""
    run = cached_run("dev")
    n = "export-dev-restore"

    def children(component_type: str) -> list[tuple[str, str]]:
        return sorted((r.type_.split(":")[-1], r.name) for r in run.children(component_type, n))

    assignments = sorted(
        ("SqlResourceSqlRoleAssignment", r.name)
        for r in run.of_type(ASSIGNMENT)
        if r.inputs["principalId"] == run.outputs[Output.RESTORE_SERVICE_PRINCIPAL_OBJECT_ID]
    )
    assert len(assignments) == 2
    assert children("cosmos-s3-export:aws:TaskRole") == [("Role", f"{n}-task"), ("RolePolicy", f"{n}-task-policy")]
    assert children("cosmos-s3-export:azure:WorkloadIdentity") == [
        ("Application", f"{n}-app"),
        ("ApplicationFederatedIdentityCredential", f"{n}-fic-ecs-task"),
        ("ServicePrincipal", f"{n}-sp"),
    ]
    # No second workspace or diagnostic setting: the account's request logs are the export component's.
    assert children("cosmos-s3-export:azure:CosmosAccess") == sorted(
        [("SqlResourceSqlRoleDefinition", f"{n}-role"), *assignments]
    )
    assert children("cosmos-s3-export:azure:RestoreTargets") == [
        ("SqlResourceSqlContainer", f"{n}-container-customers-drill"),
        ("SqlResourceSqlContainer", f"{n}-container-orders-drill"),
        ("SqlResourceSqlDatabase", f"{n}-database"),
    ]
    service = sorted(
        (r.type_.split(":")[-1], r.name)
        for r in run.children("cosmos-s3-export:aws:WorkerService")
        if "restore" in r.name or "drill" in r.name or "snapshot" in r.name
    )
    assert service == sorted(
        [
            ("TaskDefinition", "export-dev-restore-task-definition"),
            ("TaskDefinition", "export-dev-snapshot-task-definition"),
            ("Role", "export-dev-restore-scheduler"),
            ("RolePolicy", "export-dev-restore-scheduler-policy"),
            ("Schedule", "export-dev-drill-schedule-orders"),
            ("Schedule", "export-dev-drill-schedule-customers"),
            ("Schedule", "export-dev-snapshot-schedule"),
        ]
    )
