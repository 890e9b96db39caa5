"""The restore target containers, declared by the program (data-plane RBAC cannot create containers).

Each target gets its source container's definition exactly as Cosmos DB reports
it: the partition key (paths, kind and version: a hierarchical key stays
hierarchical, so every document lands in the partition it came from), the
indexing policy, the default TTL and the unique keys (what a drill compares).
Throughput, stored procedures, triggers, UDFs, conflict resolution and
analytical store settings are not copied (see README, "Restore runbook").
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


#: Definition parts copied from the source (the SDK's names; Pulumi sends them as indexingPolicy, ...).
COPIED = ("indexing_policy", "default_ttl", "unique_key_policy")


def _plain(value: Any) -> Any:
    """An invoke result (output types are dicts keyed by the SDK's property names) as plain values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def definition_of(container: Any) -> dict[str, Any]:
    """The target's `resource` input from a `get_sql_resource_sql_container` result (less its id)."""
    resource = _plain(dict(container.resource))
    out = {"partition_key": partition_key_of(container)}
    out.update({k: resource[k] for k in COPIED if k in resource})
    return out


def partition_key_of(container: Any) -> dict[str, Any]:
    """The partition key input for a target, from a `get_sql_resource_sql_container` result."""
    key = container.resource.partition_key
    if key is None or not key.paths:
        raise ValueError(
            f"source container {container.name!r} reports no partition key paths; "
            "it cannot be the source of a restore target"
        )
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
            depends.append(
                cosmosdb.SqlResourceSqlDatabase(
                    f"{name}-database",
                    account_name=a.account_name,
                    resource_group_name=a.resource_group,
                    database_name=a.target_database,
                    resource={"id": a.target_database},
                    opts=child,
                )
            )
        self.containers, self.partition_keys = {}, {}
        for source, target in a.targets.items():
            # Read at plan time, so a missing source fails the preview with Azure's own error.
            found = cosmosdb.get_sql_resource_sql_container(
                account_name=a.account_name,
                resource_group_name=a.resource_group,
                database_name=a.source_database,
                container_name=source,
                opts=pulumi.InvokeOptions(parent=self),
            )
            definition = definition_of(found)
            self.partition_keys[target] = definition["partition_key"]
            self.containers[target] = cosmosdb.SqlResourceSqlContainer(
                f"{name}-container-{target}",
                account_name=a.account_name,
                resource_group_name=a.resource_group,
                database_name=a.target_database,
                container_name=target,
                resource={"id": target, **definition},
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
        self.register_outputs({"containers": {t: c.id for t, c in self.containers.items()}})
