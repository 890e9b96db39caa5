"""Cosmos DB data-plane access of one identity, and (for the export identity) request logs for audit.

The export identity gets a read-only role on the exported containers. The
restore identity reuses this component with `data_actions` =
`contract.COSMOS_RESTORE_DATA_ACTIONS`, assigned and assignable only on the
restore target containers, and no second diagnostic setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_azure_native.cosmosdb as cosmosdb
import pulumi_azure_native.monitor as monitor
import pulumi_azure_native.operationalinsights as operationalinsights
from cosmos_export import contract

from . import policies


@dataclass
class CosmosAccessArgs:
    account_id: str  # full ARM id of the existing account
    account_name: str
    resource_group: str
    location: str
    database: str
    containers: list[str]
    principal_object_id: pulumi.Input[str]
    #: Stable key of the principal (known at plan time) for deterministic GUIDs.
    principal_key: str
    role: Literal["custom", "builtinReader"] = "custom"
    scope_level: Literal["container", "database"] = "container"
    #: The incident-response switch: False removes every role assignment.
    access_enabled: bool = True
    workspace_id: str | None = None
    workspace_retention_days: int = 30
    #: The custom role's data actions and the words naming it.
    data_actions: tuple[str, ...] = contract.COSMOS_DATA_ACTIONS
    role_label: str = "export reader"
    #: "database": the role may be assigned anywhere in the database; "assignments": only on its own scopes.
    assignable: Literal["database", "assignments"] = "database"
    #: The account's request logs (one diagnostic setting per account: the export identity's component owns it).
    diagnostics: bool = True
    #: Resources the assignments need first (the restore target containers).
    assignments_depend_on: list[pulumi.Resource] | None = None


class CosmosAccess(pulumi.ComponentResource):
    role_definition_id: pulumi.Output[str]
    assignment_scopes: list[str]
    workspace_id: pulumi.Output[str]

    def __init__(self, name: str, args: CosmosAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:azure:CosmosAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        self.assignment_scopes = policies.cosmos_scopes(a.account_id, a.database, a.containers, a.scope_level)
        if a.role == "custom":
            definition = cosmosdb.SqlResourceSqlRoleDefinition(
                f"{name}-role",
                account_name=a.account_name,
                resource_group_name=a.resource_group,
                role_definition_id=policies.deterministic_guid(a.account_id.lower(), "role", a.principal_key),
                role_name=f"{a.principal_key} {a.role_label}",
                type=cosmosdb.RoleDefinitionType.CUSTOM_ROLE,
                assignable_scopes=([f"{a.account_id}/dbs/{a.database}"] if a.assignable == "database"
                                   else list(self.assignment_scopes)),
                permissions=[{"data_actions": list(a.data_actions)}],
                opts=child,
            )
            role_definition_id: pulumi.Output[str] = definition.id
        else:
            role_definition_id = pulumi.Output.from_input(
                f"{a.account_id}/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}"
            )

        assignment_opts = pulumi.ResourceOptions(parent=self, depends_on=a.assignments_depend_on or [])
        if a.access_enabled:
            for scope in self.assignment_scopes:
                relative = scope[len(a.account_id):]  # /dbs/<db>[/colls/<c>]
                guid = policies.deterministic_guid(a.account_id.lower(), relative, a.principal_key)
                cosmosdb.SqlResourceSqlRoleAssignment(
                    f"{name}-assignment-{guid[:8]}",
                    account_name=a.account_name,
                    resource_group_name=a.resource_group,
                    role_assignment_id=guid,
                    role_definition_id=role_definition_id,
                    principal_id=a.principal_object_id,
                    scope=scope,
                    opts=assignment_opts,
                )

        self.role_definition_id = role_definition_id
        if not a.diagnostics:
            self.workspace_id = None
            self.register_outputs({"roleDefinitionId": role_definition_id})
            return
        if a.workspace_id:
            workspace_id = pulumi.Output.from_input(a.workspace_id)
        else:
            workspace = operationalinsights.Workspace(
                f"{name}-logs",
                resource_group_name=a.resource_group,
                location=a.location,
                sku={"name": "PerGB2018"},
                retention_in_days=a.workspace_retention_days,
                opts=child,
            )
            workspace_id = workspace.id
        monitor.DiagnosticSetting(
            f"{name}-diagnostics",
            name="cosmos-s3-export-requests",
            resource_uri=a.account_id,
            workspace_id=workspace_id,
            log_analytics_destination_type="Dedicated",
            logs=[
                # Data-plane requests (who read what) and RBAC-authorised control calls.
                {"category": "DataPlaneRequests", "enabled": True},
                {"category": "ControlPlaneRequests", "enabled": True},
            ],
            opts=child,
        )
        self.role_definition_id = role_definition_id
        self.workspace_id = workspace_id
        self.register_outputs({"roleDefinitionId": role_definition_id, "workspaceId": workspace_id})
