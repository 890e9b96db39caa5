"""The restore target containers, declared by the program (data-plane RBAC cannot create containers).

Each target gets its source container's partition key exactly as Cosmos DB
reports it (paths, kind and version: a hierarchical key stays hierarchical),
so a restore writes every document to the same logical partition it came from.
Throughput, stored procedures, triggers and UDFs are not copied (see README,
"Restore runbook").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_azure_native.cosmosdb as cosmosdb


@dataclass
class RestoreTargetsArgs:
    account_name: str
    resource_group: str
    source_database: str
    target_database: str
    #: Exported source container -> target container.
    targets: dict[str, str]


def partition_key_of(container: Any) -> dict[str, Any]:
    """The partition key input for a target, from a `get_sql_resource_sql_container` result."""
    key = container.resource.partition_key
    if key is None or not key.paths:
        raise ValueError(f"source container {container.name!r} reports no partition key paths; "
                         "it cannot be the source of a restore target")
    out: dict[str, Any] = {"paths": list(key.paths), "kind": key.kind or "Hash"}
    if key.version is not None:
        out["version"] = int(key.version)
    return out


class RestoreTargets(pulumi.ComponentResource):
    #: Target container name -> its resource (what the restore assignments wait for).
    containers: dict[str, cosmosdb.SqlResourceSqlContainer]
    #: Target container name -> the partition key it was declared with.
    partition_keys: dict[str, dict[str, Any]]

    def __init__(self, name: str, args: RestoreTargetsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:azure:RestoreTargets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        depends: list[pulumi.Resource] = []
        if a.target_database != a.source_database:
            # A scratch database of its own: nothing of the source's is touched.
            depends.append(cosmosdb.SqlResourceSqlDatabase(
                f"{name}-database",
                account_name=a.account_name,
                resource_group_name=a.resource_group,
                database_name=a.target_database,
                resource={"id": a.target_database},
                opts=child,
            ))
        self.containers, self.partition_keys = {}, {}
        for source, target in a.targets.items():
            # Read at plan time, so a missing source fails the preview with Azure's own error.
            found = cosmosdb.get_sql_resource_sql_container(
                account_name=a.account_name, resource_group_name=a.resource_group,
                database_name=a.source_database, container_name=source,
                opts=pulumi.InvokeOptions(parent=self))
            key = self.partition_keys[target] = partition_key_of(found)
            self.containers[target] = cosmosdb.SqlResourceSqlContainer(
                f"{name}-container-{target}",
                account_name=a.account_name,
                resource_group_name=a.resource_group,
                database_name=a.target_database,
                container_name=target,
                resource={"id": target, "partition_key": key},
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
        self.register_outputs({"containers": {t: c.id for t, c in self.containers.items()}})
