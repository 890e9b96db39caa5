"""Cosmos DB data-plane access of one identity, and (for the export identity) request logs for audit.

The export identity gets a read-only role on the exported containers. The
restore identity reuses this component (its CosmosConfig naming the target
database and containers) with `data_actions=contract.COSMOS_RESTORE_DATA_ACTIONS`,
assignable only on its own scopes, and no second diagnostic setting.
"""

from __future__ import annotations

from typing import Literal

import pulumi
import pulumi_azure_native.cosmosdb as cosmosdb
import pulumi_azure_native.monitor as monitor
import pulumi_azure_native.operationalinsights as operationalinsights

from cosmos_export import contract

from . import policies
from .config import CosmosConfig


class CosmosAccess(pulumi.ComponentResource):
    role_definition_id: pulumi.Output[str]
    assignment_scopes: list[str]
    #: None for a component without diagnostics (the restore identity's).
    workspace_id: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        args: CosmosConfig,
        *,
        account_id: str,
        location: str,
        principal_object_id: pulumi.Input[str],
        principal_key: str,
        data_actions: tuple[str, ...] = contract.COSMOS_DATA_ACTIONS,
        role_label: str = "export reader",
        assignable: Literal["database", "assignments"] = "database",
        diagnostics: bool = True,
        assignments_depend_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`account_id` is the existing account's full ARM id; `principal_key` a stable key of the
        principal (known at plan time) for deterministic GUIDs. `args.cosmos_access_enabled` is the
        incident-response switch: False removes every role assignment.

        `data_actions` / `role_label`: the custom role's actions and name. `assignable`: "database" (the
        role may be assigned anywhere in the database) or "assignments" (only on this component's scopes).
        `diagnostics`: the account's request logs (one setting per account: the export identity owns it).
        `assignments_depend_on`: what must exist first (the restore target containers)."""
        super().__init__("cosmos-s3-export:azure:CosmosAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        self.assignment_scopes = policies.cosmos_scopes(account_id, a.cosmos_database, a.exported, a.cosmos_role_scope)
        if a.cosmos_role == "custom":
            definition = cosmosdb.SqlResourceSqlRoleDefinition(
                f"{name}-role",
                account_name=a.cosmos_account_name,
                resource_group_name=a.cosmos_resource_group,
                role_definition_id=policies.deterministic_guid(account_id.lower(), "role", principal_key),
                role_name=f"{principal_key} {role_label}",
                type=cosmosdb.RoleDefinitionType.CUSTOM_ROLE,
                assignable_scopes=(
                    [f"{account_id}/dbs/{a.cosmos_database}"]
                    if assignable == "database"
                    else list(self.assignment_scopes)
                ),
                permissions=[{"data_actions": list(data_actions)}],
                opts=child,
            )
            role_definition_id: pulumi.Output[str] = definition.id
        else:
            role_definition_id = pulumi.Output.from_input(
                f"{account_id}/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}"
            )

        assignment_opts = pulumi.ResourceOptions(parent=self, depends_on=assignments_depend_on or [])
        if a.cosmos_access_enabled:
            for scope in self.assignment_scopes:
                relative = scope[len(account_id) :]  # /dbs/<db>[/colls/<c>]
                guid = policies.deterministic_guid(account_id.lower(), relative, principal_key)
                cosmosdb.SqlResourceSqlRoleAssignment(
                    f"{name}-assignment-{guid[:8]}",
                    account_name=a.cosmos_account_name,
                    resource_group_name=a.cosmos_resource_group,
                    role_assignment_id=guid,
                    role_definition_id=role_definition_id,
                    principal_id=principal_object_id,
                    scope=scope,
                    opts=assignment_opts,
                )

        self.role_definition_id = role_definition_id
        if not diagnostics:
            self.workspace_id = None
            self.register_outputs({"roleDefinitionId": role_definition_id})
            return
        # The request logs outlive the stack: `pulumi destroy` leaves the workspace and the diagnostic
        # setting in place, and the Azure deployer holds no delete on either (bootstrap/deployer.py).
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        if a.log_analytics_workspace_id:
            workspace_id = pulumi.Output.from_input(a.log_analytics_workspace_id)
        else:
            workspace = operationalinsights.Workspace(
                f"{name}-logs",
                resource_group_name=a.cosmos_resource_group,
                location=location,
                sku={"name": "PerGB2018"},
                retention_in_days=a.log_analytics_retention_days,
                opts=kept,
            )
            workspace_id = workspace.id
        monitor.DiagnosticSetting(
            f"{name}-diagnostics",
            name="cosmos-s3-export-requests",
            resource_uri=account_id,
            workspace_id=workspace_id,
            log_analytics_destination_type="Dedicated",
            logs=[
                # Data-plane requests (who read what) and RBAC-authorised control calls.
                {"category": "DataPlaneRequests", "enabled": True},
                {"category": "ControlPlaneRequests", "enabled": True},
            ],
            opts=kept,
        )
        self.role_definition_id = role_definition_id
        self.workspace_id = workspace_id
        self.register_outputs({"roleDefinitionId": role_definition_id, "workspaceId": workspace_id})
