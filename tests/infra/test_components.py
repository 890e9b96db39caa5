"""Per component: the exact children and their security-relevant inputs, including config variants."""

from __future__ import annotations

import json

import pytest

from cosmos_export import contract
from sandbox import mocked_stack
from sandbox.mocked_stack import WITHOUT_RESTORE, run_stack

ASSIGNMENT = "azure-native:cosmosdb:SqlResourceSqlRoleAssignment"


def names(run, prefix_types):
    return sorted(
        (r.type_.split(":")[-1], r.name)
        for r in run.resources
        if r.type_.split(":")[0] in prefix_types and not r.type_.startswith("cosmos-s3-export")
    )


def _bucket_children(n: str, *, locked: bool) -> list[tuple[str, str]]:
    """An export bucket and, beside it, the audit trail's own bucket and key."""
    children = []
    for b in (n, f"{n}-audit"):
        children += [
            ("Key", f"{b}-key"),
            ("Alias", f"{b}-key-alias"),
            ("Bucket", f"{b}-bucket"),
            ("BucketVersioning", f"{b}-versioning"),
            ("BucketServerSideEncryptionConfiguration", f"{b}-encryption"),
            ("BucketPublicAccessBlock", f"{b}-public-access-block"),
            ("BucketOwnershipControls", f"{b}-ownership"),
            ("BucketPolicy", f"{b}-policy"),
            ("BucketLifecycleConfiguration", f"{b}-lifecycle"),
        ]
        if locked:
            children.append(("BucketObjectLockConfiguration", f"{b}-object-lock"))
    return sorted(children + [("Trail", f"{n}-trail")])


def test_export_bucket_children_dev(dev):
    got = sorted(
        (r.type_.split(":")[-1], r.name)
        for r in dev.resources
        if r.type_.startswith(("aws:s3", "aws:kms", "aws:cloudtrail")) and "-alerts" not in r.name
    )
    n = "export-dev"
    assert got == _bucket_children(n, locked=False)
    lifecycle = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    rules = {r["id"]: r for r in dev.named(lifecycle, f"{n}-lifecycle").inputs["rules"]}
    assert list(rules) == ["expire-exports", "expire-athena-results"]  # dev has currentState: the Athena results
    assert rules["expire-athena-results"]["filter"] == {"prefix": "athena-results/"}
    export = rules["expire-exports"]
    assert export["filter"] == {"prefix": "cosmos/"}
    assert export["expiration"] == {"days": 14}
    assert export["noncurrentVersionExpiration"] == {"noncurrentDays": 3}
    assert export["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 2}
    (audit_rule,) = dev.named(lifecycle, f"{n}-audit-lifecycle").inputs["rules"]
    assert audit_rule["filter"] == {"prefix": "audit-trail/"} and audit_rule["expiration"] == {"days": 365}
    # The trail writes into its own bucket under its own key, never the export bucket or key.
    audit_key = dev.named("aws:kms/key:Key", f"{n}-audit-key").outputs["arn"]
    trail = dev.one("aws:cloudtrail/trail:Trail").inputs
    assert trail["kmsKeyId"] == audit_key != dev.kms_key_arn and trail["s3KeyPrefix"] == "audit-trail"
    assert trail["s3BucketName"] == f"{dev.bucket}-audit"
    assert {"field": "resources.ARN", "startsWiths": [f"arn:aws:s3:::{dev.bucket}/cosmos/"]} in trail[
        "advancedEventSelectors"
    ][0]["fieldSelectors"]


def test_audit_trail_outlives_the_stack_and_forceDestroy(dev):
    """dev's forceDestroy empties the export bucket only; every audit resource is retained on destroy."""
    audit = [r for r in dev.resources if r.custom and ("-audit-" in r.name or r.type_ == "aws:cloudtrail/trail:Trail")]
    assert len(audit) == 10
    assert dev.named("aws:s3/bucket:Bucket", "export-dev-bucket").inputs["forceDestroy"] is True
    assert dev.named("aws:s3/bucket:Bucket", "export-dev-audit-bucket").inputs["forceDestroy"] is False
    assert {r.name for r in audit if r.retain_on_delete} == {r.name for r in audit}
    assert not dev.named("aws:s3/bucket:Bucket", "export-dev-bucket").retain_on_delete


def test_prod_locks_the_audit_trail_like_the_exports(prod):
    lock = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
    for name in ("export-prod-object-lock", "export-prod-audit-object-lock"):
        assert prod.named(lock, name).inputs["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 365}
    assert prod.named("aws:s3/bucket:Bucket", "export-prod-audit-bucket").inputs["objectLockEnabled"] is True


def test_prod_bucket_has_object_lock_and_transition(prod):
    assert prod.named("aws:s3/bucket:Bucket", "export-prod-bucket").inputs["objectLockEnabled"] is True
    lifecycle = prod.named("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "export-prod-lifecycle")
    rules = {r["id"]: r for r in lifecycle.inputs["rules"]}
    assert rules["expire-exports"]["transitions"] == [{"days": 35, "storageClass": "GLACIER_IR"}]
    assert rules["expire-exports"]["expiration"] == {"days": 400}


def test_workload_identity_has_no_secret_and_one_fic(dev_export_only):
    dev = dev_export_only
    got = names(dev, ("azuread",))
    assert got == sorted(
        [
            ("Application", "export-dev-app"),
            ("ServicePrincipal", "export-dev-sp"),
            ("ApplicationFederatedIdentityCredential", "export-dev-fic-ecs-task"),
        ]
    )
    app = dev.one("azuread:index/application:Application")
    assert "passwords" not in app.inputs and "keyCredentials" not in app.inputs
    sp = dev.one("azuread:index/servicePrincipal:ServicePrincipal")
    assert sp.inputs["clientId"] == app.outputs["clientId"]


def test_deployer_owns_the_app_and_service_principal(every_stack):
    # Application.ReadWrite.OwnedBy (the CI deployer's Graph permission) reaches only owned applications.
    deployer = mocked_stack._uuid("deployer-object")  # what the getClientConfig mock answers
    apps = every_stack.of_type("azuread:index/application:Application")
    sps = every_stack.of_type("azuread:index/servicePrincipal:ServicePrincipal")
    assert len(apps) == len(sps) == 2  # the export identity and the restore identity
    assert [r.inputs["owners"] for r in apps + sps] == [[deployer]] * 4


def test_configured_owners_own_the_app_whoever_deploys():
    """entraAppOwners (the CI deployer and the laptop deployers) replace 'whoever runs pulumi up'."""
    owners = ["1c8e8a69-3b75-4a9f-8b1d-7d2a8e4f6c32", "0B7D7F58-2A64-4F8E-9A0C-6C1F7D3E5B21"]
    run = run_stack("prod", {"entraAppOwners": owners})
    expected = sorted(owners, key=str.lower)
    # Both identities' apps and service principals (the export's and the restore's).
    for type_ in ("azuread:index/application:Application", "azuread:index/servicePrincipal:ServicePrincipal"):
        assert [r.inputs["owners"] for r in run.of_type(type_)] == [expected, expected]
    assert mocked_stack._uuid("deployer-object") not in expected


def test_additional_federated_credentials_default_to_account_issuer():
    run = run_stack(
        "dev",
        {
            "additionalFederatedCredentials": [
                {"name": "use1", "subject": "arn:aws:iam::111122223333:role/cosmos-s3-export/export-use1-task"}
            ]
        },
    )
    fics = {f["display_name"]: f for f in run.federated_credentials()}
    assert set(fics) == {"ecs-task", "use1"}
    assert fics["use1"]["issuer"] == run.issuer
    assert fics["use1"]["subject"] == "arn:aws:iam::111122223333:role/cosmos-s3-export/export-use1-task"


def test_cosmos_custom_role_has_exactly_the_four_actions(dev):
    role = dev.named("azure-native:cosmosdb:SqlResourceSqlRoleDefinition", "export-dev-role")
    assert role.inputs["permissions"] == [{"dataActions": list(contract.COSMOS_DATA_ACTIONS)}]
    assert role.inputs["type"] == "CustomRole"
    assert role.inputs["assignableScopes"] == [
        dev.outputs["cosmosRoleDefinitionId"].split("/sqlRoleDefinitions/")[0] + "/dbs/orders"
    ]
    diag = dev.one("azure-native:monitor:DiagnosticSetting").inputs
    assert diag["workspaceId"] == dev.one("azure-native:operationalinsights:Workspace").outputs["id"]
    assert {"category": "DataPlaneRequests", "enabled": True} in diag["logs"]


def test_builtin_reader_at_database_scope():
    run = run_stack("staging", {"cosmosRole": "builtinReader", "cosmosRoleScope": "database", **WITHOUT_RESTORE})
    assert not run.of_type("azure-native:cosmosdb:SqlResourceSqlRoleDefinition")
    (a,) = run.cosmos_role_assignments()
    assert a["relative_scope"] == "/dbs/orders"
    assert a["role_definition_id"].endswith(f"/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}")


def test_given_workspace_is_used_not_created(prod):
    assert not prod.of_type("azure-native:operationalinsights:Workspace")
    assert (
        prod.one("azure-native:monitor:DiagnosticSetting").inputs["workspaceId"]
        == prod.config["cosmos-s3-export:logAnalyticsWorkspaceId"]
    )


def test_adopt_mode_declares_no_federation_resource():
    run = run_stack("prod", {"federation": "adopt"})
    assert not run.of_type("aws:iam/outboundWebIdentityFederation:OutboundWebIdentityFederation")
    assert run.federated_credentials()[0]["issuer"] == run.issuer


def test_worker_service_children_and_image(dev_export_only):
    dev = dev_export_only
    got = sorted(
        (r.type_.split(":")[-1], r.name)
        for r in dev.resources
        if r.type_.startswith(
            ("aws:ecr", "aws:ecs", "aws:cloudwatch/logGroup", "aws:ec2", "aws:sqs", "aws:scheduler", "docker-build")
        )
    )
    n = "export-dev"
    assert got == sorted(
        [
            ("Repository", f"{n}-repo"),
            ("LogGroup", f"{n}-logs"),
            ("Image", f"{n}-image"),
            ("Cluster", f"{n}-cluster"),
            ("SecurityGroup", f"{n}-sg"),
            ("TaskDefinition", f"{n}-task-definition"),
            ("Queue", f"{n}-schedule-dlq"),
            ("Schedule", f"{n}-schedule"),
        ]
    )
    repo = dev.one("aws:ecr/repository:Repository").inputs
    assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"] == {"scanOnPush": True}
    image = dev.one("docker-build:index:Image").inputs
    assert image["platforms"] == ["linux/arm64"] and image["push"] is True
    assert image["dockerfile"]["location"].endswith("runtime/Dockerfile")
    td = dev.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert td["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    assert (td["cpu"], td["memory"]) == ("512", "1024")
    assert dev.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 7
    sched = dev.one("aws:scheduler/schedule:Schedule").inputs
    assert (sched["scheduleExpression"], sched["scheduleExpressionTimezone"], sched["state"]) == (
        "rate(6 hours)",
        "UTC",
        "ENABLED",
    )


def test_snapshot_mode_reaches_the_command():
    run = run_stack("dev", {"exportMode": "snapshot", "snapshotSchedule": None})
    (container,) = json.loads(
        run.named("aws:ecs/taskDefinition:TaskDefinition", "export-dev-task-definition").inputs["containerDefinitions"]
    )
    assert container["command"] == ["run", "--mode", "snapshot"]


def _children(run):
    return {
        (c.type_, c.name): sorted((r.type_.split(":")[-1], r.name) for r in run.children(c.type_, c.name))
        for c in run.components()
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_component_declares_exactly_its_children(stack):
    """Children by parent (the URN the engine records), so a resource moved to the wrong component shows up.

    The stack without its restore block: none of the restore identity, targets or tasks exist.
    """
    run = run_stack(stack, WITHOUT_RESTORE)
    n = f"export-{stack}"
    bucket = [c for c in _bucket_children(n, locked=stack == "prod")]
    assignments = [("SqlResourceSqlRoleAssignment", r.name) for r in run.of_type(ASSIGNMENT)]
    assert len(assignments) == {"dev": 2, "prod": 3}[stack]  # one per exported container
    cosmos = [("DiagnosticSetting", f"{n}-diagnostics"), ("SqlResourceSqlRoleDefinition", f"{n}-role"), *assignments]
    if stack == "dev":  # prod is given a workspace
        cosmos.append(("Workspace", f"{n}-logs"))
    assert _children(run) == {
        ("cosmos-s3-export:storage:ExportBucket", n): sorted(bucket),
        ("cosmos-s3-export:aws:OutboundFederation", n): [("OutboundWebIdentityFederation", f"{n}-federation")],
        ("cosmos-s3-export:aws:TaskRole", n): [("Role", f"{n}-task"), ("RolePolicy", f"{n}-task-policy")],
        ("cosmos-s3-export:azure:WorkloadIdentity", n): [
            ("Application", f"{n}-app"),
            ("ApplicationFederatedIdentityCredential", f"{n}-fic-ecs-task"),
            ("ServicePrincipal", f"{n}-sp"),
        ],
        ("cosmos-s3-export:azure:CosmosAccess", n): sorted(cosmos),
        ("cosmos-s3-export:aws:WorkerService", n): sorted(
            [
                ("Cluster", f"{n}-cluster"),
                ("Image", f"{n}-image"),
                ("LogGroup", f"{n}-logs"),
                ("Queue", f"{n}-schedule-dlq"),
                ("Repository", f"{n}-repo"),
                ("Role", f"{n}-execution"),
                ("Role", f"{n}-scheduler"),
                ("RolePolicy", f"{n}-execution-policy"),
                ("RolePolicy", f"{n}-scheduler-policy"),
                ("Schedule", f"{n}-schedule"),
                ("SecurityGroup", f"{n}-sg"),
                ("TaskDefinition", f"{n}-task-definition"),
            ]
        ),
        ("cosmos-s3-export:aws:Alerting", n): sorted(
            [
                ("Key", f"{n}-alerts-key"),
                ("Topic", f"{n}-alerts"),
                ("TopicPolicy", f"{n}-alerts-policy"),
                ("EventRule", f"{n}-task-failed"),
                ("EventTarget", f"{n}-task-failed-target"),
                ("MetricAlarm", f"{n}-schedule-dlq"),
                ("Dashboard", f"{n}-dashboard"),
            ]
            + [
                ("MetricAlarm", f"{n}-{kind}-{c}")
                for c in {"dev": ["orders", "customers"], "prod": ["orders", "customers", "invoices"]}[stack]
                for kind in ("stale", "drill-failed")
            ]
        ),
        ("cosmos-s3-export:aws:Analytics", n): sorted(
            [
                ("CatalogDatabase", f"{n}-database"),
                ("Workgroup", f"{n}-workgroup"),
                ("Role", f"{n}-analyst"),
                ("RolePolicy", f"{n}-analyst-policy"),
            ]
            + [
                ("CatalogTable", f"{n}-{c}-{table}")
                for c in {"dev": ["orders", "customers"], "prod": ["orders", "customers", "invoices"]}[stack]
                for table in ("current", "changes")
            ]
        ),
    }
    # Nothing is declared outside a component.
    assert all(r.parent_urn != "" and "$" in r.urn for r in run.resources if r.custom)


def test_execution_role_may_only_pull_its_image_and_write_its_logs(dev):
    role = dev.named("aws:iam/role:Role", "export-dev-execution")
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"} and set(trust["Condition"]) == {
        "StringEquals",
        "ArnLike",
    }
    (policy,) = [r for r in dev.of_type("aws:iam/rolePolicy:RolePolicy") if r.inputs["role"] == role.outputs["id"]]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    repo = dev.one("aws:ecr/repository:Repository").outputs["arn"]
    log_group = dev.named("aws:cloudwatch/logGroup:LogGroup", "export-dev-logs").outputs["arn"]
    assert statements == {
        "EcrAuth": {"Sid": "EcrAuth", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        "PullWorkerImage": {
            "Sid": "PullWorkerImage",
            "Effect": "Allow",
            "Resource": repo,
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
        },
        "WriteWorkerLogs": {
            "Sid": "WriteWorkerLogs",
            "Effect": "Allow",
            "Resource": f"{log_group}:log-stream:*",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        },
    }
