"""The stack's configuration as typed, validated objects.

`load_stack_config(get)` is the only place that reads configuration: `get`
maps a full key (``cosmos-s3-export:bucketName``, ``aws:region``) to its raw
string value, or None. Every rule is checked before any resource is
declared, and every broken rule is reported at once in one `ConfigError`
whose lines name the key, the bad value and the fix.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any, Callable, Iterable, Literal

from cosmos_export import contract
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "cosmos-s3-export"

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


class ConfigError(Exception):
    """Every configuration problem of a stack, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} configuration problem(s); nothing was deployed:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


# --- Pure validators (also used directly by tests) ---------------------------

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


# EventBridge Scheduler: at(yyyy-mm-ddThh:mm:ss), rate(value unit), cron(6 fields).
_AT = re.compile(r"^at\(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\)$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")


def schedule_problem(expr: str) -> str | None:
    """Why EventBridge Scheduler would refuse this expression, or None."""
    if _AT.match(expr):
        return None
    m = _RATE.match(expr)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        if value < 1:
            return "rate value must be a positive integer"
        if (value == 1) != (not unit.endswith("s")):
            return f"use '{unit.rstrip('s')}' for a value of 1 and '{unit.rstrip('s')}s' otherwise"
        return None
    m = _CRON.match(expr)
    if m:
        fields = m.group(1).split()
        if len(fields) != 6:
            return f"a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), this one has {len(fields)}"
        dom, dow = fields[2], fields[4]
        if (dom == "?") == (dow == "?"):
            return "exactly one of day-of-month (3rd field) and day-of-week (5th field) must be '?'"
        return None
    return "must be cron(...), rate(...) or at(...)"


def cosmos_name_problem(name: str) -> str | None:
    """Why Cosmos DB would refuse this database/container id, or None."""
    if not 1 <= len(name) <= 255:
        return "must be 1-255 characters long"
    bad = sorted({c for c in name if c in "/\\#?"})
    if bad:
        return f"must not contain {', '.join(repr(c) for c in bad)}"
    if name != name.rstrip():
        return "must not end with a space"
    return None


def prefix_problem(prefix: str) -> str | None:
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return "must be non-empty, without leading, trailing or doubled '/'"
    if not re.match(r"^[A-Za-z0-9!_.*'()/-]+$", prefix):
        return "may contain only letters, digits, '/' and !_.*'()-"
    return None


# --- The model ---------------------------------------------------------------


class ObjectLock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int = Field(ge=1, le=36500)


class AdditionalFederatedCredential(BaseModel):
    """Another AWS role (e.g. a second region's task role) trusted by the same app."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9-]{1,100}$")
    subject: str
    issuer: str | None = None  # default: this account's issuer

    @field_validator("subject")
    @classmethod
    def _subject_is_role_arn(cls, v: str) -> str:
        if "*" in v or not _ROLE_ARN.match(v):
            raise ValueError(
                "must be an exact IAM role ARN (arn:aws:iam::<12 digits>:role/<path/name>); "
                "Entra flexible (wildcard) credentials do not accept AWS tokens"
            )
        return v

    @field_validator("issuer")
    @classmethod
    def _issuer_format(cls, v: str | None) -> str | None:
        if v is not None and not re.match(contract.AWS_ISSUER_PATTERN, v):
            raise ValueError("must be https://<uuid>.tokens.sts.global.api.aws with no trailing slash")
        return v


class RestoreConfig(BaseModel):
    """The `restore:` block: a separate writer identity, its target containers and the drill schedule.

    Self-contained: its own field rules here, and `problems(...)` for the rules that need the stack's
    source database and exported containers (the stack's cross-field check calls it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
    enabled: bool = False
    #: Where the target containers are declared (a scratch database, or the source one).
    target_database: str | None = None
    #: Exported source container -> restore target container (one per exported container).
    target_containers: dict[str, str] = {}
    #: EventBridge Scheduler expression of the scheduled drill; unset: drills run only by hand.
    drill_schedule: str | None = None

    @field_validator("target_database")
    @classmethod
    def _db(cls, v: str | None) -> str | None:
        problem = v is not None and cosmos_name_problem(v)
        if problem:
            raise ValueError(f"a Cosmos DB database id {problem}")
        return v

    @field_validator("target_containers")
    @classmethod
    def _targets(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [f"{t!r} ({p})" for t in v.values() if (p := cosmos_name_problem(t))]
        if bad:
            raise ValueError(f"invalid Cosmos DB container id(s): {', '.join(bad)}")
        return v

    @field_validator("drill_schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        problem = v is not None and schedule_problem(v)
        if problem:
            raise ValueError(
                f"EventBridge Scheduler would refuse it: {problem}; e.g. 'cron(0 5 ? * SUN *)' or 'rate(7 days)'"
            )
        return v

    def problems(self, *, source_database: str, source_containers: list[str], exported: list[str],
                 reader_scope: str = "container") -> list[tuple[str, Any, str]]:
        """(key under `restore.`, value, fix) for every rule that needs the stack's sources."""
        if not self.enabled:
            return []
        out: list[tuple[str, Any, str]] = []
        if self.target_database is None:
            out.append(("restore.targetDatabase", None,
                        "restore is enabled but names no target database; set it to a scratch database, "
                        "e.g. 'restore-drills' (the program creates it)"))
        missing = [c for c in exported if c not in self.target_containers]
        if missing:
            out.append(("restore.targetContainers", self.target_containers,
                        f"no target for exported container(s) {', '.join(map(repr, missing))}; add one entry "
                        f"per exported container, e.g. {{{', '.join(f'{c}: {c}-restore' for c in missing)}}}"))
        unknown = [c for c in self.target_containers if c not in exported]
        if unknown:
            out.append(("restore.targetContainers", self.target_containers,
                        f"{', '.join(map(repr, unknown))} not exported (exported: {exported}); "
                        "remove them or fix the spelling"))
        targets = list(self.target_containers.values())
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            out.append(("restore.targetContainers", self.target_containers,
                        f"target(s) {', '.join(map(repr, duplicates))} named for more than one source; "
                        "give each exported container its own target"))
        if self.target_database == source_database:
            clash = [t for t in targets if t in source_containers]
            if clash:
                out.append(("restore.targetContainers", self.target_containers,
                            f"target(s) {', '.join(map(repr, clash))} are source containers of database "
                            f"{source_database!r}: a restore must never write a source; choose other names "
                            "or another targetDatabase"))
            if reader_scope == "database":
                out.append(("restore.targetDatabase", self.target_database,
                            "is the source database, where cosmosRoleScope 'database' would let the export "
                            "identity read the restore targets too; use another targetDatabase or "
                            "cosmosRoleScope 'container'"))
        return out

    def target_of(self, source: str) -> str:
        return self.target_containers[source]


class StackConfig(BaseModel):
    """Everything one stack deploys, already checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where
    stack: str
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # Federation
    federation: Literal["create", "adopt"] = "adopt"
    # Bucket
    bucket_name: str
    export_prefix: str = "cosmos"
    retention_days: int = Field(ge=1, le=36500)
    transition_days: int | None = Field(default=None, ge=30)
    transition_storage_class: Literal["STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER"] = "STANDARD_IA"
    noncurrent_version_expiration_days: int = Field(default=30, ge=1)
    abort_incomplete_multipart_days: int = Field(default=2, ge=1)
    object_lock: ObjectLock | None = None
    audit_trail: bool = True
    force_destroy: bool = False
    # Azure / Cosmos
    entra_app_display_name: str
    additional_federated_credentials: list[AdditionalFederatedCredential] = []
    cosmos_access_enabled: bool = True
    cosmos_account_name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,42}[a-z0-9]$")
    cosmos_resource_group: str = Field(pattern=r"^[\w().-]{1,90}$")
    cosmos_database: str
    cosmos_containers: list[str] = Field(min_length=1)
    export_containers: list[str] | None = None
    cosmos_role: Literal["custom", "builtinReader"] = "custom"
    cosmos_role_scope: Literal["container", "database"] = "container"
    log_analytics_workspace_id: str | None = None
    log_analytics_retention_days: int = Field(default=30, ge=30, le=730)
    # Worker
    schedule: str
    schedule_time_zone: str = "UTC"
    schedule_enabled: bool = True
    schedule_retry_attempts: int = Field(default=2, ge=0, le=185)
    schedule_max_event_age_seconds: int = Field(default=3600, ge=60, le=86400)
    #: Periodic full snapshots beside the incremental schedule (bounds stale deletes in LatestVersion mode).
    snapshot_schedule: str | None = None
    # Restore
    restore: RestoreConfig = RestoreConfig()
    export_mode: Literal["incremental", "snapshot"] = "incremental"
    min_consistency: str = "Session"
    change_feed_mode: Literal["LatestVersion", "AllVersionsAndDeletes"] = "LatestVersion"
    priority: Literal["Low", "High"] = "Low"
    concurrency: int = Field(default=4, ge=1, le=64)
    part_size_mb: int = Field(default=64, ge=5, le=5120)
    compression: Literal["gzip", "zstd"] = "zstd"
    token_duration_seconds: int = contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS
    cpu: int = 1024
    memory: int = 2048
    architecture: Literal["ARM64", "X86_64"] = "ARM64"
    log_retention_days: int = 30
    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[str] = Field(min_length=1)
    assign_public_ip: bool = False

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, v: str) -> str:
        problem = bucket_name_problem(v)
        if problem:
            raise ValueError(f"S3 would refuse this bucket name: it {problem}")
        return v

    @field_validator("export_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        problem = prefix_problem(v)
        if problem:
            raise ValueError(f"the export prefix {problem}, e.g. 'cosmos/orders'")
        return v

    @field_validator("schedule", "snapshot_schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        problem = v is not None and schedule_problem(v)
        if problem:
            raise ValueError(
                f"EventBridge Scheduler would refuse it: {problem}; e.g. 'cron(15 2 * * ? *)' or 'rate(6 hours)'"
            )
        return v

    @field_validator("schedule_time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone; use a name like 'UTC' or 'Europe/Berlin'") from None
        return v

    @field_validator("cosmos_database")
    @classmethod
    def _db(cls, v: str) -> str:
        problem = cosmos_name_problem(v)
        if problem:
            raise ValueError(f"a Cosmos DB database id {problem}")
        return v

    @field_validator("cosmos_containers", "export_containers")
    @classmethod
    def _containers(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [f"{c!r} ({p})" for c in v if (p := cosmos_name_problem(c))]
        if bad:
            raise ValueError(f"invalid Cosmos DB container id(s): {', '.join(bad)}")
        if len(set(v)) != len(v):
            raise ValueError("lists a container more than once; list each once")
        return v

    @field_validator("min_consistency")
    @classmethod
    def _consistency(cls, v: str) -> str:
        if v not in contract.CONSISTENCY_LEVELS:
            raise ValueError(f"not a Cosmos DB consistency level; use one of {', '.join(contract.CONSISTENCY_LEVELS)}")
        return v

    @field_validator("token_duration_seconds")
    @classmethod
    def _duration(cls, v: int) -> int:
        lo, hi = contract.WEB_IDENTITY_TOKEN_MIN_SECONDS, contract.WEB_IDENTITY_TOKEN_MAX_SECONDS
        if not lo <= v <= hi:
            raise ValueError(f"sts:GetWebIdentityToken accepts {lo}..{hi} seconds; use e.g. 300")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, v: int) -> int:
        allowed = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
        if v not in allowed:
            raise ValueError(f"CloudWatch Logs accepts only {', '.join(map(str, allowed))}")
        return v

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not re.match(r"^subnet-[0-9a-f]{8,17}$", s)]
        if bad:
            raise ValueError(f"not subnet ids: {', '.join(map(repr, bad))}; use ids like 'subnet-0a1b2c3d4e5f60718'")
        return v

    @field_validator("log_analytics_workspace_id")
    @classmethod
    def _workspace(cls, v: str | None) -> str | None:
        if v is not None and not re.match(
            rf"^/subscriptions/{_UUID}/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$",
            v, re.IGNORECASE,
        ):
            raise ValueError(
                "must be a full workspace resource id "
                "(/subscriptions/<uuid>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>), "
                "or leave it unset to create one"
            )
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> "StackConfig":
        problems: list[tuple[str, Any, str]] = []
        if self.export_containers is not None:
            unknown = [c for c in self.export_containers if c not in self.cosmos_containers]
            if unknown:
                problems.append(("exportContainers", unknown,
                                 f"{', '.join(map(repr, unknown))} not in cosmosContainers {self.cosmos_containers}; "
                                 "add them to cosmosContainers or fix the spelling"))
            if not self.export_containers:
                problems.append(("exportContainers", [], "exports nothing; list at least one container or unset it to export all of cosmosContainers"))
        if self.object_lock and self.retention_days < self.object_lock.days:
            problems.append(("retentionDays", self.retention_days,
                             f"shorter than objectLock.days ({self.object_lock.days}): expiry would fight the lock; "
                             f"set retentionDays >= {self.object_lock.days} or lower objectLock.days"))
        if self.transition_days is not None and self.transition_days >= self.retention_days:
            problems.append(("transitionDays", self.transition_days,
                             f"not before retentionDays ({self.retention_days}); lower it or unset it"))
        total = 1 + len(self.additional_federated_credentials)
        if total > contract.MAX_FEDERATED_CREDENTIALS_PER_APP:
            problems.append(("additionalFederatedCredentials", f"{len(self.additional_federated_credentials)} entries",
                             f"the app would hold {total} federated credentials, Entra allows "
                             f"{contract.MAX_FEDERATED_CREDENTIALS_PER_APP}; remove some or use a second app"))
        names = [c.name for c in self.additional_federated_credentials]
        if len(set(names)) != len(names) or "ecs-task" in names:
            problems.append(("additionalFederatedCredentials", names, "names must be unique and not 'ecs-task'; rename the duplicates"))
        if self.change_feed_mode == "AllVersionsAndDeletes" and self.export_mode == "snapshot":
            problems.append(("changeFeedMode", self.change_feed_mode,
                             "AllVersionsAndDeletes can only start from now or a continuation, not replay a snapshot; "
                             "use exportMode 'incremental' or changeFeedMode 'LatestVersion'"))
        if self.snapshot_schedule is not None and self.export_mode == "snapshot":
            problems.append(("snapshotSchedule", self.snapshot_schedule,
                             "exportMode is 'snapshot', so every scheduled run is already a full snapshot; "
                             "unset snapshotSchedule or use exportMode 'incremental'"))
        problems += self.restore.problems(source_database=self.cosmos_database,
                                          source_containers=self.cosmos_containers, exported=self.exported,
                                          reader_scope=self.cosmos_role_scope)
        valid_memory = _fargate_memory(self.cpu)
        if valid_memory is None:
            problems.append(("cpu", self.cpu, "Fargate accepts 256, 512, 1024, 2048, 4096, 8192 or 16384"))
        elif self.memory not in valid_memory:
            problems.append(("memory", self.memory,
                             f"Fargate with cpu {self.cpu} accepts {valid_memory[0]}..{valid_memory[-1]} MiB "
                             f"in steps of {valid_memory[1] - valid_memory[0]}"))
        if problems:
            raise _CrossFieldError(problems)
        return self

    @property
    def exported(self) -> list[str]:
        return list(self.export_containers if self.export_containers is not None else self.cosmos_containers)

    @property
    def uses_object_lock(self) -> bool:
        return self.object_lock is not None


def _fargate_memory(cpu: int) -> list[int] | None:
    table = {
        256: [512, 1024, 2048],
        512: list(range(1024, 4097, 1024)),
        1024: list(range(2048, 8193, 1024)),
        2048: list(range(4096, 16385, 1024)),
        4096: list(range(8192, 30721, 1024)),
        8192: list(range(16384, 61441, 4096)),
        16384: list(range(32768, 122881, 8192)),
    }
    return table.get(cpu)


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[tuple[str, Any, str]]):
        self.problems = problems
        super().__init__("; ".join(p[2] for p in problems))


# --- Loading -----------------------------------------------------------------

# config key -> (model field, kind); kind "json" values are parsed from JSON.
_KEYS: dict[str, tuple[str, str]] = {
    "aws:region": ("region", "str"),
    "federation": ("federation", "str"),
    "bucketName": ("bucket_name", "str"),
    "exportPrefix": ("export_prefix", "str"),
    "retentionDays": ("retention_days", "str"),
    "transitionDays": ("transition_days", "str"),
    "transitionStorageClass": ("transition_storage_class", "str"),
    "noncurrentVersionExpirationDays": ("noncurrent_version_expiration_days", "str"),
    "abortIncompleteMultipartDays": ("abort_incomplete_multipart_days", "str"),
    "objectLock": ("object_lock", "json"),
    "auditTrail": ("audit_trail", "str"),
    "forceDestroy": ("force_destroy", "str"),
    "entraAppDisplayName": ("entra_app_display_name", "str"),
    "additionalFederatedCredentials": ("additional_federated_credentials", "json"),
    "cosmosAccessEnabled": ("cosmos_access_enabled", "str"),
    "cosmosAccountName": ("cosmos_account_name", "str"),
    "cosmosResourceGroup": ("cosmos_resource_group", "str"),
    "cosmosDatabase": ("cosmos_database", "str"),
    "cosmosContainers": ("cosmos_containers", "json"),
    "exportContainers": ("export_containers", "json"),
    "cosmosRole": ("cosmos_role", "str"),
    "cosmosRoleScope": ("cosmos_role_scope", "str"),
    "logAnalyticsWorkspaceId": ("log_analytics_workspace_id", "str"),
    "logAnalyticsRetentionDays": ("log_analytics_retention_days", "str"),
    "schedule": ("schedule", "str"),
    "scheduleTimeZone": ("schedule_time_zone", "str"),
    "scheduleEnabled": ("schedule_enabled", "str"),
    "scheduleRetryAttempts": ("schedule_retry_attempts", "str"),
    "scheduleMaxEventAgeSeconds": ("schedule_max_event_age_seconds", "str"),
    "snapshotSchedule": ("snapshot_schedule", "str"),
    "restore": ("restore", "json"),
    "exportMode": ("export_mode", "str"),
    "minConsistency": ("min_consistency", "str"),
    "changeFeedMode": ("change_feed_mode", "str"),
    "priority": ("priority", "str"),
    "concurrency": ("concurrency", "str"),
    "partSizeMb": ("part_size_mb", "str"),
    "compression": ("compression", "str"),
    "tokenDurationSeconds": ("token_duration_seconds", "str"),
    "cpu": ("cpu", "str"),
    "memory": ("memory", "str"),
    "architecture": ("architecture", "str"),
    "logRetentionDays": ("log_retention_days", "str"),
    "vpcId": ("vpc_id", "str"),
    "subnetIds": ("subnet_ids", "json"),
    "assignPublicIp": ("assign_public_ip", "str"),
}
_FIELD_TO_KEY = {field: key for key, (field, _) in _KEYS.items()}
#: Keys without a default: the message for a missing one says so.
REQUIRED_KEYS = tuple(
    k for k, (f, _) in _KEYS.items() if f not in ("stack", "entra_app_display_name") and StackConfig.model_fields[f].is_required()
)
CONFIG_KEYS = tuple(_KEYS)


def full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def load_stack_config(get: Callable[[str], str | None], stack: str, present_keys: Iterable[str] = ()) -> StackConfig:
    """Read every key through `get` (full key -> raw string or None) and validate.

    `present_keys` (every full key the stack sets) lets a misspelt key of this
    project fail instead of being silently ignored. Raises ConfigError listing
    every problem at once.
    """
    raw: dict[str, Any] = {"stack": stack, "entra_app_display_name": f"{PROJECT}-{stack}"}
    known = {full_key(k) for k in _KEYS}
    problems: list[str] = [
        f"{k} is not a known setting: remove it or fix its spelling (see 'Config keys' in README.md)"
        for k in sorted(present_keys) if k.startswith(f"{PROJECT}:") and k not in known
    ]
    unparsed: set[str] = set()
    for key, (field, kind) in _KEYS.items():
        value = get(full_key(key))
        if value is None:
            continue
        if kind == "json" and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                problems.append(f"{full_key(key)} = {value!r}: not valid YAML/JSON structure ({e.msg}); "
                                "write it as a YAML list or mapping in the stack file")
                unparsed.add(field)
                continue
        raw[field] = value
    try:
        config = StackConfig(**raw)
    except ValidationError as e:
        for err in e.errors():
            if err["type"] == "missing" and err["loc"] and err["loc"][0] in unparsed:
                continue  # already reported as unparseable
            problems.extend(_describe(err))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _describe(err: dict[str, Any]) -> list[str]:
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), _CrossFieldError):
        return [f"{full_key(k)} = {json.dumps(v)}: {msg}" for k, v, msg in err["ctx"]["error"].problems]
    return [_describe_one(err, loc)]


def _describe_one(err: dict[str, Any], loc: list[str]) -> str:
    key = full_key(_FIELD_TO_KEY.get(loc[0], loc[0])) if loc else "(stack)"
    sub = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    if err["type"] == "missing":
        return f"{key}{sub} is missing: set it with `pulumi config set {key} <value>` (see 'Config keys' in README.md)"
    if err["type"] == "extra_forbidden":
        return f"{key}{sub} is not a known setting: remove it or fix its spelling (see 'Config keys' in README.md)"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}{sub} = {json.dumps(err.get('input'), default=str)}: {msg}"
