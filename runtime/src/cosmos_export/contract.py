"""Values shared by the Pulumi program and the worker.

Both sides import this module (the Pulumi program has the runtime package
installed), so an environment variable name, the token audience or the Cosmos
data actions cannot drift between what is provisioned and what runs.
Nothing here may depend on anything but the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

# --- Chain of trust -------------------------------------------------------

#: Audience of the AWS-issued JWT and of the Entra federated credential.
TOKEN_EXCHANGE_AUDIENCE: Final = "api://AzureADTokenExchange"
#: Entra rejects ES384 (AADSTS5002738), so the worker always asks for RS256.
SIGNING_ALGORITHM: Final = "RS256"
#: Limits STS enforces on GetWebIdentityToken's DurationSeconds.
WEB_IDENTITY_TOKEN_MIN_SECONDS: Final = 60
WEB_IDENTITY_TOKEN_MAX_SECONDS: Final = 3600
DEFAULT_WEB_IDENTITY_TOKEN_SECONDS: Final = 300
#: Issuer format of an account's outbound identity federation.
AWS_ISSUER_PATTERN: Final = (
    r"^https://[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tokens\.sts\.global\.api\.aws$"
)
#: Entra allows at most this many federated identity credentials per app.
MAX_FEDERATED_CREDENTIALS_PER_APP: Final = 20

# --- Cosmos DB data plane ---------------------------------------------------

_SQL = "Microsoft.DocumentDB/databaseAccounts"
#: Exactly the data actions the worker needs: nothing that writes.
COSMOS_DATA_ACTIONS: Final = (
    f"{_SQL}/readMetadata",
    f"{_SQL}/sqlDatabases/containers/items/read",
    f"{_SQL}/sqlDatabases/containers/executeQuery",
    f"{_SQL}/sqlDatabases/containers/readChangeFeed",
)
#: Built-in "Cosmos DB Built-in Data Reader" role definition id.
COSMOS_BUILTIN_DATA_READER_ROLE_ID: Final = "00000000-0000-0000-0000-000000000001"
#: Actions the built-in Data Reader grants (it also covers the four above).
COSMOS_BUILTIN_DATA_READER_ACTIONS: Final = (
    f"{_SQL}/readMetadata",
    f"{_SQL}/sqlDatabases/containers/executeQuery",
    f"{_SQL}/sqlDatabases/containers/readChangeFeed",
    f"{_SQL}/sqlDatabases/containers/items/read",
)
#: The restore identity's data actions (a separate identity, assigned only on the restore target
#: containers, never on an exported source): item writes plus the reads a restore's checks need.
#: Not the built-in Data Contributor (00000000-0000-0000-0000-000000000002): it includes containers/*.
COSMOS_RESTORE_DATA_ACTIONS: Final = (
    f"{_SQL}/readMetadata",
    f"{_SQL}/sqlDatabases/containers/items/read",
    f"{_SQL}/sqlDatabases/containers/items/create",
    f"{_SQL}/sqlDatabases/containers/items/upsert",
    f"{_SQL}/sqlDatabases/containers/items/replace",
    f"{_SQL}/sqlDatabases/containers/items/delete",
    # `restore --exact` and drills must list what the target holds (documents the state does not have are
    # deleted or reported), and point reads cannot find unknown ids. The target's LatestVersion change feed
    # from the beginning lists every live document with this one action; an SDK query would need both
    # executeQuery and readChangeFeed (Microsoft's data-plane actions reference). Still only on the targets.
    f"{_SQL}/sqlDatabases/containers/readChangeFeed",
)


def cosmos_scope(account_endpoint_host: str) -> str:
    """Token scope the Cosmos SDK asks Entra for."""
    return f"https://{account_endpoint_host}/.default"


# --- Choices, bounds and name rules (one home for both halves) --------------
#
# The stack config (components/config.py) and the worker settings
# (cosmos_export/settings.py) are typed with these Literals and check names with
# these functions, so a value the stack accepts is a value the worker accepts.

Compression = Literal["gzip", "zstd"]
ConsistencyLevel = Literal["Eventual", "ConsistentPrefix", "Session", "BoundedStaleness", "Strong"]
ChangeFeedMode = Literal["LatestVersion", "AllVersionsAndDeletes"]
#: What the task's command asks for (`cosmos-export run --mode ...`).
RunMode = Literal["snapshot", "incremental"]
#: What a manifest records: a run mode, or a snapshot read by query instead of the change feed.
ManifestMode = Literal["snapshot", "incremental", "query-snapshot"]
IdentityMode = Literal["workload", "laptop"]
Priority = Literal["Low", "High"]
SnapshotSource = Literal["changefeed", "query"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

COMPRESSIONS: Final = get_args(Compression)
#: Consistency levels from weakest to strongest.
CONSISTENCY_LEVELS: Final = get_args(ConsistencyLevel)
CHANGE_FEED_MODES: Final = get_args(ChangeFeedMode)
RUN_MODES: Final = get_args(RunMode)
IDENTITY_MODES: Final = get_args(IdentityMode)
PRIORITIES: Final = get_args(Priority)
SNAPSHOT_SOURCES: Final = get_args(SnapshotSource)
LOG_LEVELS: Final = get_args(LogLevel)


# --- Fan-out over feed ranges (issue 15) -------------------------------------
#
# The three worker commands a fan-out state machine runs, one per state: the plan, one shard per
# Map item, the commit. The state machine (components/fan_out.py) and the CLI (cosmos_export/fanout.py)
# are both built from these functions, so a state cannot drift from a command.

#: Shards are numbered 1..N: `--shard K/N`.
FAN_OUT_SHARD_FORMAT: Final = "{shard}/{shards}"
#: The most shards one run may plan (the stack's fanOut.maxShards and the worker's `plan --shards` alike).
FAN_OUT_MAX_SHARDS: Final = 1000


def fan_out_plan_command(mode: str, shards: int | str, execution: str) -> list[str]:
    """Plans one run of every configured container over at most `shards` shards; writes the plan document
    (`fan_out_plan_key`): {"run_id": "<one run id for every container>", "shards": [1, 2, ...]}."""
    return ["plan", "--mode", mode, "--shards", str(shards), "--execution", execution]


def fan_out_shard_command(run_id: str, shard: int | str, shards: int | str) -> list[str]:
    """Exports shard K of N of the planned run: its parts and its shard result, never a commit."""
    return ["run", "--run", run_id, "--shard", FAN_OUT_SHARD_FORMAT.format(shard=shard, shards=shards)]


def fan_out_commit_command(run_id: str) -> list[str]:
    """Checks every shard's result and parts, then commits one manifest and the checkpoint per container."""
    return ["commit", "--run", run_id]


def fan_out_plan_key(prefix: str, execution: str) -> str:
    """Where `plan` writes the plan document the state machine reads (S3 key in the export bucket)."""
    return "/".join(p for p in (prefix.strip("/"), "fan-out", f"{execution}.json") if p)


@dataclass(frozen=True)
class Bound:
    """An inclusive integer range; str() is how both halves print it ("1..64")."""

    lo: int
    hi: int

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


#: Feed ranges read in parallel.
CONCURRENCY: Final = Bound(1, 64)
#: Multipart part size in MB: S3's part limits (5 MiB minimum, 5 GiB maximum).
PART_SIZE_MB: Final = Bound(5, 5120)
#: Items per Cosmos page.
PAGE_SIZE: Final = Bound(1, 10_000)
#: What sts:GetWebIdentityToken accepts as DurationSeconds.
TOKEN_DURATION_SECONDS: Final = Bound(WEB_IDENTITY_TOKEN_MIN_SECONDS, WEB_IDENTITY_TOKEN_MAX_SECONDS)
#: Documents a restore upserts between two progress checkpoints (at most this many are redone after a kill).
RESTORE_BATCH_DOCUMENTS: Final = Bound(1, 10_000)

# Defaults of the worker's tuning, which are also the stack's defaults.
DEFAULT_COMPRESSION: Final[Compression] = "zstd"  # smaller and several times cheaper than gzip
DEFAULT_CONCURRENCY: Final = 4
DEFAULT_PART_SIZE_MB: Final = 64
DEFAULT_PAGE_SIZE: Final = 1000
DEFAULT_MIN_CONSISTENCY: Final[ConsistencyLevel] = "Session"
DEFAULT_CHANGE_FEED_MODE: Final[ChangeFeedMode] = "LatestVersion"
#: The analytics tables (current state + change log, Parquet under `tables/`) after every committed run.
DEFAULT_CURRENT_STATE: Final = True
DEFAULT_PREFIX: Final = "cosmos"
DEFAULT_RESTORE_BATCH_DOCUMENTS: Final = 500

AWS_REGION_PATTERN: Final = r"^[a-z]{2}(-[a-z]+)+-\d$"
#: Cosmos DB account names (Azure's naming rules for Microsoft.DocumentDB/databaseAccounts):
#: 3-44 characters, lowercase letters, digits and '-', starting and ending with a letter or digit.
COSMOS_ACCOUNT_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{1,42}[a-z0-9]$"
#: Separators of the worker's list variables (COSMOS_CONTAINERS, RESTORE_TARGETS "source=target" pairs).
_LIST_SEPARATORS = ",="


def aws_region_problem(name: str) -> str | None:
    """Why this is not an AWS region name such as eu-west-1, or None."""
    return None if re.match(AWS_REGION_PATTERN, name) else "is not an AWS region name"


def cosmos_account_problem(name: str) -> str | None:
    """Why Azure would refuse this Cosmos DB account name, or None."""
    if not 3 <= len(name) <= 44:
        return f"must be 3-44 characters long (it has {len(name)})"
    if not re.match(COSMOS_ACCOUNT_PATTERN, name):
        return "may contain only lowercase letters, digits and '-', and must start and end with a letter or digit"
    return None


def cosmos_id_problem(name: str) -> str | None:
    """Why this database or container id cannot be exported, or None.

    Cosmos DB's own rules (1-255 characters; no '/', '\\\\', '#', '?'; no trailing
    space), plus what the export needs: printable characters with no leading
    space (the id is an S3 key segment and an environment value), no ',' or '='
    (the worker's environment lists ids comma-separated, restore targets as
    source=target pairs), and not '.' or '..' (a path segment of its own).
    Dots and inner spaces are fine: 'orders.v2', 'order lines'.
    """
    if not 1 <= len(name) <= 255:
        return "must be 1-255 characters long"
    bad = sorted({c for c in name if c in "/\\#?"})
    if bad:
        return f"must not contain {', '.join(repr(c) for c in bad)}"
    if name.endswith(" "):
        return "must not end with a space"
    if name != name.strip():
        return "must not start or end with whitespace"
    if not (name.isascii() and name.isprintable()):
        return (
            "must contain only printable ASCII characters: each part's S3 metadata names it, and S3 metadata is ASCII"
        )
    separators = sorted({c for c in name if c in _LIST_SEPARATORS})
    if separators:
        return (
            f"must not contain {', '.join(repr(c) for c in separators)}: the worker's environment lists ids "
            "separated by ',' and restore targets as source=target pairs"
        )
    if name in (".", ".."):
        return f"must not be {name!r}: it is a path segment in the S3 keys"
    return None


_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse this general-purpose bucket name, or None."""
    if not 3 <= len(name) <= 63:
        return f"must be 3-63 characters long (it has {len(name)})"
    if not _BUCKET_CHARS.match(name):
        return "may contain only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return "must not contain '..', '.-' or '-.'"
    if _IPV4.match(name):
        return "must not be formatted as an IP address"
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"must not start with the reserved prefix '{prefix}'"
    for suffix in ("-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"):
        if name.endswith(suffix):
            return f"must not end with the reserved suffix '{suffix}'"
    return None


def prefix_problem(prefix: str) -> str | None:
    """Why this export prefix is refused, or None (S3's safe key characters, no empty segment)."""
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return "must be non-empty with no leading, trailing or double '/'"
    if not re.match(r"^[A-Za-z0-9!_.*'()/-]+$", prefix):
        return "may contain only letters, digits, '/' and !_.*'()-"
    if any(part in (".", "..") for part in prefix.split("/")):
        return "must not have a '.' or '..' segment"
    return None


# --- Worker environment (set by the ECS task definition) -------------------


class Env:
    """Names of the worker's environment variables. Never a secret among them."""

    # Identity
    IDENTITY_MODE = "EXPORT_IDENTITY_MODE"  # "workload" (ECS) or "laptop"
    AWS_REGION = "AWS_REGION"
    AZURE_TENANT_ID = "EXPORT_AZURE_TENANT_ID"
    AZURE_CLIENT_ID = "EXPORT_AZURE_CLIENT_ID"
    AZURE_AUTHORITY_HOST = "EXPORT_AZURE_AUTHORITY_HOST"  # override for sovereign clouds / sandbox
    TOKEN_DURATION_SECONDS = "EXPORT_TOKEN_DURATION_SECONDS"
    STS_ENDPOINT = "EXPORT_STS_ENDPOINT"  # override (sandbox); default is the regional endpoint
    # Source
    COSMOS_ENDPOINT = "EXPORT_COSMOS_ENDPOINT"
    COSMOS_DATABASE = "EXPORT_COSMOS_DATABASE"
    COSMOS_CONTAINERS = "EXPORT_COSMOS_CONTAINERS"  # comma-separated
    COSMOS_TLS_VERIFY = "EXPORT_COSMOS_TLS_VERIFY"  # "false" only for the local emulators
    MIN_CONSISTENCY = "EXPORT_MIN_CONSISTENCY"
    CHANGE_FEED_MODE = "EXPORT_CHANGE_FEED_MODE"  # LatestVersion | AllVersionsAndDeletes
    PRIORITY = "EXPORT_PRIORITY"  # Low | High
    QUERY_FILTER = "EXPORT_QUERY_FILTER"  # optional WHERE clause for query snapshots
    SNAPSHOT_SOURCE = "EXPORT_SNAPSHOT_SOURCE"  # changefeed (default) | query
    PAGE_SIZE = "EXPORT_PAGE_SIZE"  # max items per Cosmos page
    COSMOS_ACCOUNT = "EXPORT_COSMOS_ACCOUNT"  # account name in S3 keys; default: first label of the endpoint host
    # Destination
    BUCKET = "EXPORT_BUCKET"
    PREFIX = "EXPORT_PREFIX"
    KMS_KEY_ARN = "EXPORT_KMS_KEY_ARN"
    S3_ENDPOINT = "EXPORT_S3_ENDPOINT"  # override (sandbox)
    # Tuning
    CONCURRENCY = "EXPORT_CONCURRENCY"
    PART_SIZE_MB = "EXPORT_PART_SIZE_MB"
    COMPRESSION = "EXPORT_COMPRESSION"  # gzip | zstd
    LOG_LEVEL = "EXPORT_LOG_LEVEL"
    STACK = "EXPORT_STACK"  # the Pulumi stack's name: the Stack dimension of the worker's metrics
    CURRENT_STATE = "EXPORT_CURRENT_STATE"  # true: refresh the analytics tables after every committed run
    # Restore and drills (the restore task only)
    RESTORE_TARGET_DATABASE = "EXPORT_RESTORE_TARGET_DATABASE"
    RESTORE_TARGETS = "EXPORT_RESTORE_TARGETS"  # comma-separated source=target container pairs
    MAX_RU_PER_SECOND = "EXPORT_MAX_RU_PER_SECOND"  # request-unit budget of a run (export and restore)
    RESTORE_BATCH_DOCUMENTS = "EXPORT_RESTORE_BATCH_DOCUMENTS"  # documents per restore progress checkpoint


# --- Stack outputs (read by the sandbox, the README and CI) ----------------


class Output:
    BUCKET = "bucketName"
    PREFIX = "exportPrefix"
    KMS_KEY_ARN = "kmsKeyArn"
    TASK_ROLE_ARN = "taskRoleArn"
    EXECUTION_ROLE_ARN = "executionRoleArn"
    ISSUER = "awsIssuer"
    TENANT_ID = "azureTenantId"
    CLIENT_ID = "azureClientId"
    SERVICE_PRINCIPAL_OBJECT_ID = "servicePrincipalObjectId"
    CLUSTER = "clusterName"
    TASK_DEFINITION_ARN = "taskDefinitionArn"
    RUN_TASK_COMMAND = "runTaskCommand"
    COSMOS_ENDPOINT = "cosmosEndpoint"
    WORKER_ENVIRONMENT = "workerEnvironment"
    COSMOS_ROLE_DEFINITION_ID = "cosmosRoleDefinitionId"
    #: False while the Cosmos account still accepts account keys (disableLocalAuth false): then "no static
    #: secret" holds for this worker only, not for the account.
    COSMOS_LOCAL_AUTH_DISABLED = "cosmosLocalAuthDisabled"
    # Restore identity and tasks (only when the stack's restore block is enabled)
    RESTORE_TASK_ROLE_ARN = "restoreTaskRoleArn"
    RESTORE_CLIENT_ID = "restoreClientId"
    RESTORE_SERVICE_PRINCIPAL_OBJECT_ID = "restoreServicePrincipalObjectId"
    RESTORE_TASK_DEFINITION_ARN = "restoreTaskDefinitionArn"
    RESTORE_WORKER_ENVIRONMENT = "restoreWorkerEnvironment"
    COSMOS_RESTORE_ROLE_DEFINITION_ID = "cosmosRestoreRoleDefinitionId"
    RUN_RESTORE_COMMAND = "runRestoreCommand"
    RUN_DRILL_COMMAND = "runDrillCommand"
    # Analytics (only with currentState; the analyst role only with analystPrincipals)
    ANALYTICS_DATABASE = "analyticsDatabase"
    ATHENA_WORKGROUP = "athenaWorkgroup"
    ANALYST_ROLE_ARN = "analystRoleArn"
    #: Operator role kind (operator-export, operator-restore, ...) -> role ARN ({} without `operators`).
    OPERATOR_ROLE_ARNS = "operatorRoleArns"
    # Alerting
    ALERT_TOPIC_ARN = "alertTopicArn"
    DASHBOARD_NAME = "dashboardName"


# --- Export format ----------------------------------------------------------

#: Version of the manifest / checkpoint documents this worker writes. 2 added the container's definition,
#: the change-feed mode and the query filter to each manifest. The number moved (rather than adding optional
#: fields under 1) because manifests are parsed strictly: a worker that knows only 1 would reject a version-2
#: manifest with "extra inputs are not permitted" and the advice to restore the object from its version
#: history; with 2 it says plainly "newer than this worker's 1: upgrade the worker image". 3 added `columns`
#: (the analytics tables' typed columns in DuckDB and Glue terms); format 1 and 2 manifests still load.
MANIFEST_FORMAT_VERSION: Final = 3
#: Older versions stay readable: format 1 manifests simply have no container definition.
#: Properties Cosmos DB sets on every document; a materialized state drops them unless asked to keep them.
SYSTEM_PROPERTIES: Final = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")
#: Folders under each container's prefix ({prefix}/{account}/{db}/{container}/...) beside data/,
#: manifests/ and checkpoint.json: drill reports, and restore progress (the restore role writes only these).
DRILLS_DIR: Final = "drills"
RESTORES_DIR: Final = "restores"
# --- Metrics (CloudWatch Embedded Metric Format in the worker's log lines; alarms read them) ---

#: CloudWatch namespace of every metric the worker (and the restore drill) emits.
METRICS_NAMESPACE: Final = "CosmosExport"


class Metric:
    """Metric names. Per container, one EMF line per run outcome (commit or failure)."""

    DOCUMENTS = "Documents"
    BYTES = "Bytes"
    PARTS = "Parts"
    REQUEST_UNITS = "RequestUnits"
    #: The run's request units over its reading time: compare with EXPORT_MAX_RU_PER_SECOND.
    REQUEST_UNITS_PER_SECOND = "RequestUnitsPerSecond"
    #: Requests Cosmos answered 429 (the SDK's and the worker's retries).
    THROTTLED_REQUESTS = "ThrottledRequests"
    SECONDS = "Seconds"
    SUCCESS = "Success"  # 1 when the container's run committed
    FAILURE = "Failure"  # 1 when it failed (nothing committed)
    LAG = "LagSeconds"  # now minus the newest _ts committed so far
    #: Emitted by `cosmos-export drill` (restore-worker): 1 when a drill fails, 0 when it passes,
    #: with the container dimension set below. The drill-failure alarm reads it.
    DRILL_FAILED = "DrillFailed"


class Dimension:
    STACK = "Stack"
    ACCOUNT = "Account"
    DATABASE = "Database"
    CONTAINER = "Container"
    MODE = "Mode"  # the run's mode: snapshot | incremental | query-snapshot


#: Dimension sets of every metric: alarms use the first (a container, whatever the run mode; an alarm must
#: name every dimension of the metric), dashboards may split by mode with the second.
CONTAINER_DIMENSIONS: Final = (Dimension.STACK, Dimension.ACCOUNT, Dimension.DATABASE, Dimension.CONTAINER)
MODE_DIMENSIONS: Final = CONTAINER_DIMENSIONS + (Dimension.MODE,)


#: S3 object metadata keys (x-amz-meta-*) on every part.
class Meta:
    SCHEMA_VERSION = "schema-version"
    RUN_ID = "run-id"
    ACCOUNT = "source-account"
    DATABASE = "source-database"
    CONTAINER = "source-container"
    FEED_RANGE = "feed-range"
    DOCUMENT_COUNT = "document-count"
    SHA256 = "sha256"
    FORMAT_VERSION = "format-version"
