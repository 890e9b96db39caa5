"""The analytics catalog: SQL over the backup where it lies (Glue + Athena), and who may run it.

Declared when the worker writes the tables (`currentState`, default true):
- a Glue database `cosmos_export_<stack>` and two tables per exported container, declared from the same
  layout the worker writes (`cosmos_export.layout`): `<container>_current` (Parquet through a Hive
  SymlinkTextInputFormat manifest: the worker's pointer, replaced in one PUT, so Athena never sees a
  half-written version) and `<container>_changes` (Parquet partitioned by `dt`, with partition projection:
  no crawler, no MSCK REPAIR);
- an Athena workgroup whose settings are enforced: results under `athena-results/` of the export bucket,
  SSE-KMS with the export key, and a bytes-scanned cutoff per query;
- with `analystPrincipals`: a read-only analyst role (`export-<stack>-analyst`) trusted by exactly those
  principals. The bucket and key policies admit it (policies.ExportAccess.analysts) and fence it: it reads only
  the table prefixes and the query results, and writes only the query results (Athena writes them with the
  caller's credentials, so this one write is needed); it deletes nothing.

The typed columns the worker promotes (manifest `columns`) are in the Parquet files and in DuckDB; the Glue
tables declare the fixed columns (the promoted ones are data-dependent), and Athena reads any field of
`document` with json_extract_scalar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from cosmos_export import layout

from . import naming
from .analytics_config import ATHENA_QUERY_ACTIONS, GLUE_READ_ACTIONS, RESULTS_PREFIX, AnalyticsConfig, glue_name
from .policies import Doc, operator_trust_policy
from .task_role import program_role

ANALYST_ROLE_KIND = "analyst"
#: Hive classes Athena and Glue read Parquet with; the symlink input format reads the list of files from the pointer.
SYMLINK_INPUT = "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
#: The first day the change log's `dt` projection covers (NOW is Athena's today).
PROJECTION_START = "2024-01-01"


def database_name(stack: str) -> str:
    return glue_name(f"cosmos_export_{stack}")


def workgroup_name(stack: str) -> str:
    return f"{naming.prefix(stack)}-analytics"


def table_names(container: str) -> tuple[str, str]:
    """(current state, change log) Glue table names of an exported container."""
    return glue_name(f"{container}_current"), glue_name(f"{container}_changes")


def table_read_prefixes(container_prefixes: list[str]) -> list[str]:
    """The key prefixes an analyst may read: each container's tables/ (never data/, manifests or checkpoints)."""
    return [f"{p}/tables/" for p in container_prefixes]


def _columns(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"name": name, "type": glue} for name, glue in pairs]


def current_table_storage(bucket: str, container_prefix: str) -> dict:
    return {
        "location": f"s3://{bucket}/{layout.current_pointer_prefix(container_prefix)}",
        "input_format": SYMLINK_INPUT,
        "output_format": TEXT_OUTPUT,
        "ser_de_info": {"serialization_library": PARQUET_SERDE},
        "columns": _columns(layout.TABLE_COLUMNS),
    }


def changes_table_storage(bucket: str, container_prefix: str) -> dict:
    return {
        "location": f"s3://{bucket}/{layout.changes_root(container_prefix)}",
        "input_format": PARQUET_INPUT,
        "output_format": PARQUET_OUTPUT,
        "ser_de_info": {"serialization_library": PARQUET_SERDE},
        "columns": _columns(layout.TABLE_COLUMNS + layout.CHANGE_COLUMNS),
    }


def changes_projection(bucket: str, container_prefix: str) -> dict[str, str]:
    """Partition projection on `dt` (the run's start date, as the worker writes it): no crawler, no MSCK REPAIR."""
    return {
        "classification": "parquet",
        "projection.enabled": "true",
        "projection.dt.type": "date",
        "projection.dt.format": "yyyy-MM-dd",
        "projection.dt.range": f"{PROJECTION_START},NOW",
        "projection.dt.interval": "1",
        "projection.dt.interval.unit": "DAYS",
        "storage.location.template": f"s3://{bucket}/{layout.changes_root(container_prefix)}dt=${{dt}}/",
    }


def analyst_role_policy(
    *, account_id: str, region: str, bucket: str, container_prefixes: list[str], stack: str, tables: list[str]
) -> Doc:
    """Read the tables, query them through the stack's workgroup, write only Athena's results; no delete."""
    arn = f"arn:aws:s3:::{bucket}"
    reads = table_read_prefixes(container_prefixes)
    results = f"{RESULTS_PREFIX}/"
    glue = f"arn:aws:glue:{region}:{account_id}"
    database = database_name(stack)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTablePrefixes",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in reads] + [f"{results}*"]}},
            },
            {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": arn},
            {
                "Sid": "ReadTables",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"{arn}/{p}*" for p in reads] + [f"{arn}/{results}*"],
            },
            {
                # Athena writes a query's results with the caller's credentials: the only write, only there.
                "Sid": "WriteQueryResults",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": f"{arn}/{results}*",
            },
            {
                "Sid": "ExportKeyThroughS3",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": f"arn:aws:kms:{region}:{account_id}:key/*",
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            },
            {
                "Sid": "ReadCatalog",
                "Effect": "Allow",
                "Action": GLUE_READ_ACTIONS,
                "Resource": [f"{glue}:catalog", f"{glue}:database/{database}"]
                + [f"{glue}:table/{database}/{t}" for t in tables],
            },
            {
                "Sid": "QueryInWorkgroup",
                "Effect": "Allow",
                "Action": ATHENA_QUERY_ACTIONS,
                "Resource": f"arn:aws:athena:{region}:{account_id}:workgroup/{workgroup_name(stack)}",
            },
        ],
    }


@dataclass
class AnalyticsArgs:
    stack: str
    account_id: str
    region: str
    config: AnalyticsConfig
    bucket: str
    #: container name -> its key prefix (`ExportTarget.container_prefix`).
    containers: dict[str, str]
    kms_key_arn: pulumi.Input[str]


class Analytics(pulumi.ComponentResource):
    database_name: pulumi.Output[str]
    workgroup_name: pulumi.Output[str]
    #: None without analystPrincipals.
    analyst_role_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: AnalyticsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:Analytics", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        database = aws.glue.CatalogDatabase(
            f"{name}-database",
            name=database_name(args.stack),
            description=f"Cosmos DB exports of {args.stack}: current state and change log per container",
            opts=child,
        )
        tables: list[str] = []
        for container, prefix in sorted(args.containers.items()):
            current, changes = table_names(container)
            aws.glue.CatalogTable(
                f"{name}-{container}-current",
                name=current,
                database_name=database.name,
                table_type="EXTERNAL_TABLE",
                description=f"{container}: one row per live document at the latest committed sequence",
                parameters={"classification": "parquet", "EXTERNAL": "TRUE"},
                storage_descriptor=current_table_storage(args.bucket, prefix),
                opts=child,
            )
            aws.glue.CatalogTable(
                f"{name}-{container}-changes",
                name=changes,
                database_name=database.name,
                table_type="EXTERNAL_TABLE",
                description=f"{container}: every version each committed run exported",
                parameters={"EXTERNAL": "TRUE", **changes_projection(args.bucket, prefix)},
                partition_keys=[{"name": "dt", "type": "string"}],
                storage_descriptor=changes_table_storage(args.bucket, prefix),
                opts=child,
            )
            tables += [current, changes]
        workgroup = aws.athena.Workgroup(
            f"{name}-workgroup",
            name=workgroup_name(args.stack),
            description=f"SQL over the Cosmos DB exports of {args.stack} (settings enforced)",
            force_destroy=True,  # saved queries and history only; results expire by lifecycle
            configuration={
                "enforce_workgroup_configuration": True,
                "publish_cloudwatch_metrics_enabled": True,
                "bytes_scanned_cutoff_per_query": args.config.bytes_scanned_cutoff,
                "result_configuration": {
                    "output_location": f"s3://{args.bucket}/{RESULTS_PREFIX}/",
                    "encryption_configuration": {"encryption_option": "SSE_KMS", "kms_key_arn": args.kms_key_arn},
                },
            },
            opts=child,
        )
        self.analyst_role_arn = None
        if args.config.analyst_principals:
            role = program_role(
                f"{name}-analyst",
                account_id=args.account_id,
                stack=args.stack,
                kind=ANALYST_ROLE_KIND,
                trust=operator_trust_policy(args.config.analyst_principals),
                description=f"Analysts of {args.stack}: read-only SQL over the analytics tables (README 'Analytics')",
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-analyst-policy",
                role=role.id,
                policy=json.dumps(
                    analyst_role_policy(
                        account_id=args.account_id,
                        region=args.region,
                        bucket=args.bucket,
                        container_prefixes=sorted(args.containers.values()),
                        stack=args.stack,
                        tables=tables,
                    )
                ),
                opts=child,
            )
            self.analyst_role_arn = role.arn
        self.database_name = database.name
        self.workgroup_name = workgroup.name
        self.register_outputs(
            {"databaseName": database.name, "workgroupName": workgroup.name, "analystRoleArn": self.analyst_role_arn}
        )
