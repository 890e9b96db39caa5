"""Values shared by the Pulumi program and the worker.

Both sides import this module (the Pulumi program has the runtime package
installed), so an environment variable name, the token audience or the Cosmos
data actions cannot drift between what is provisioned and what runs.
Nothing here may depend on anything but the standard library.
"""

from __future__ import annotations

from typing import Final

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
AWS_ISSUER_PATTERN: Final = r"^https://[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tokens\.sts\.global\.api\.aws$"
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
#: Consistency levels from weakest to strongest.
CONSISTENCY_LEVELS: Final = ("Eventual", "ConsistentPrefix", "Session", "BoundedStaleness", "Strong")


def cosmos_scope(account_endpoint_host: str) -> str:
    """Token scope the Cosmos SDK asks Entra for."""
    return f"https://{account_endpoint_host}/.default"


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
    # Restore and drills (the restore task only)
    RESTORE_TARGET_DATABASE = "EXPORT_RESTORE_TARGET_DATABASE"
    RESTORE_TARGETS = "EXPORT_RESTORE_TARGETS"  # comma-separated source=target container pairs
    MAX_RU_PER_SECOND = "EXPORT_MAX_RU_PER_SECOND"  # request-unit budget (restore; later the export too)
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
    # Restore identity and tasks (only when the stack's restore block is enabled)
    RESTORE_TASK_ROLE_ARN = "restoreTaskRoleArn"
    RESTORE_CLIENT_ID = "restoreClientId"
    RESTORE_SERVICE_PRINCIPAL_OBJECT_ID = "restoreServicePrincipalObjectId"
    RESTORE_TASK_DEFINITION_ARN = "restoreTaskDefinitionArn"
    RESTORE_WORKER_ENVIRONMENT = "restoreWorkerEnvironment"
    COSMOS_RESTORE_ROLE_DEFINITION_ID = "cosmosRestoreRoleDefinitionId"
    RUN_RESTORE_COMMAND = "runRestoreCommand"
    RUN_DRILL_COMMAND = "runDrillCommand"


# --- Export format ----------------------------------------------------------

#: Version of the manifest / checkpoint documents this worker writes.
MANIFEST_FORMAT_VERSION: Final = 1
#: Folders under each container's prefix ({prefix}/{account}/{db}/{container}/...) beside data/,
#: manifests/ and checkpoint.json: drill reports, and restore progress (the restore role writes only these).
DRILLS_DIR: Final = "drills"
RESTORES_DIR: Final = "restores"
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
