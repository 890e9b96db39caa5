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
import types
import typing
import zoneinfo
from typing import Any, Callable, Iterable, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from cosmos_export import contract

from . import naming
from .alerting_config import AlertingConfig
from .analytics_config import AnalyticsConfig
from .fan_out_config import RESERVED as FAN_OUT_RESERVED
from .fan_out_config import FanOutConfig
from .operators_config import OperatorsConfig

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

# The name rules both halves enforce live in the contract; re-exported for the tests and policies.
bucket_name_problem = contract.bucket_name_problem
cosmos_name_problem = contract.cosmos_id_problem
prefix_problem = contract.prefix_problem


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

    Self-contained: its own field rules here, and `problems(...)` for the rules that need the source
    database and exported containers (CosmosConfig's cross-field check calls it).
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

    def problems(
        self,
        *,
        source_database: str,
        source_containers: list[str],
        exported: list[str],
        reader_scope: str = "container",
    ) -> list[tuple[str, Any, str]]:
        """(key under `restore.`, value, fix) for every rule that needs the stack's sources."""
        if not self.enabled:
            return []
        out: list[tuple[str, Any, str]] = []
        if self.target_database is None:
            out.append(
                (
                    "restore.targetDatabase",
                    None,
                    "restore is enabled but names no target database; set it to a scratch database, "
                    "e.g. 'restore-drills' (the program creates it)",
                )
            )
        missing = [c for c in exported if c not in self.target_containers]
        if missing:
            out.append(
                (
                    "restore.targetContainers",
                    self.target_containers,
                    f"no target for exported container(s) {', '.join(map(repr, missing))}; add one entry "
                    f"per exported container, e.g. {{{', '.join(f'{c}: {c}-restore' for c in missing)}}}",
                )
            )
        unknown = [c for c in self.target_containers if c not in exported]
        if unknown:
            out.append(
                (
                    "restore.targetContainers",
                    self.target_containers,
                    f"{', '.join(map(repr, unknown))} not exported (exported: {exported}); "
                    "remove them or fix the spelling",
                )
            )
        targets = list(self.target_containers.values())
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            out.append(
                (
                    "restore.targetContainers",
                    self.target_containers,
                    f"target(s) {', '.join(map(repr, duplicates))} named for more than one source; "
                    "give each exported container its own target",
                )
            )
        if self.target_database == source_database:
            clash = [t for t in targets if t in source_containers]
            if clash:
                out.append(
                    (
                        "restore.targetContainers",
                        self.target_containers,
                        f"target(s) {', '.join(map(repr, clash))} are source containers of database "
                        f"{source_database!r}: a restore must never write a source; choose other names "
                        "or another targetDatabase",
                    )
                )
            if reader_scope == "database":
                out.append(
                    (
                        "restore.targetDatabase",
                        self.target_database,
                        "is the source database, where cosmosRoleScope 'database' would let the export "
                        "identity read the restore targets too; use another targetDatabase or "
                        "cosmosRoleScope 'container'",
                    )
                )
        return out

    def target_of(self, source: str) -> str:
        return self.target_containers[source]


class _Section(BaseModel):
    """One concern of the stack. Field names are the config keys in snake_case (bucketName -> bucket_name)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


def _bounded(bound: contract.Bound, default: int) -> Any:
    return Field(default=default, ge=bound.lo, le=bound.hi)


class BucketConfig(_Section):
    """The export bucket: the ExportBucket component's input."""

    bucket_name: str
    export_prefix: str = contract.DEFAULT_PREFIX
    retention_days: int = Field(ge=1, le=36500)
    transition_days: int | None = Field(default=None, ge=30)
    transition_storage_class: Literal["STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER"] = "STANDARD_IA"
    noncurrent_version_expiration_days: int = Field(default=30, ge=1)
    abort_incomplete_multipart_days: int = Field(default=2, ge=1)
    object_lock: ObjectLock | None = None
    audit_trail: bool = True
    #: Days the audit trail is kept in its own bucket (at least objectLock.days where the stack locks).
    audit_retention_days: int = Field(default=365, ge=1, le=36500)
    force_destroy: bool = False

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, v: str) -> str:
        problem = bucket_name_problem(v)
        if problem:
            raise ValueError(f"S3 would refuse this bucket name: it {problem}")
        if len(v) + naming.AUDIT_BUCKET_SUFFIX_LENGTH > 63:
            raise ValueError(
                f"leaves no room for the audit trail's bucket {naming.audit_bucket_name(v)!r} "
                f"(63 characters at most): shorten it to {63 - naming.AUDIT_BUCKET_SUFFIX_LENGTH} or fewer"
            )
        return v

    @field_validator("export_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        problem = prefix_problem(v)
        if problem:
            raise ValueError(f"the export prefix {problem}, e.g. 'cosmos/orders'")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> BucketConfig:
        problems: list[tuple[str, Any, str]] = []
        if self.object_lock and self.retention_days < self.object_lock.days:
            problems.append(
                (
                    "retentionDays",
                    self.retention_days,
                    f"shorter than objectLock.days ({self.object_lock.days}): expiry would fight the lock; "
                    f"set retentionDays >= {self.object_lock.days} or lower objectLock.days",
                )
            )
        if self.object_lock and self.audit_trail and self.audit_retention_days < self.object_lock.days:
            problems.append(
                (
                    "auditRetentionDays",
                    self.audit_retention_days,
                    f"shorter than objectLock.days ({self.object_lock.days}), which also locks the audit "
                    f"trail: set auditRetentionDays >= {self.object_lock.days}",
                )
            )
        if self.transition_days is not None and self.transition_days >= self.retention_days:
            problems.append(
                (
                    "transitionDays",
                    self.transition_days,
                    f"not before retentionDays ({self.retention_days}); lower it or unset it",
                )
            )
        _raise(problems)
        return self

    @property
    def uses_object_lock(self) -> bool:
        return self.object_lock is not None


class IdentityConfig(_Section):
    """Outbound federation, the Entra application and the token it exchanges."""

    federation: Literal["create", "adopt"] = "adopt"
    entra_app_display_name: str
    #: Object ids of the Entra app's owners: the CI deployer's service principal and the people who
    #: deploy from laptops (Entra lets users and service principals own apps, not groups).
    entra_app_owners: list[str] = []
    additional_federated_credentials: list[AdditionalFederatedCredential] = []
    token_duration_seconds: int = contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS

    @field_validator("entra_app_owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if not re.fullmatch(_UUID, o)]
        if bad:
            raise ValueError(
                f"not Entra object ids: {', '.join(map(repr, bad))}; list the object ids (GUIDs) of the "
                "CI deployer's service principal (bootstrap output AZURE_DEPLOYER_OBJECT_ID) and the "
                "users who deploy"
            )
        if len({o.lower() for o in v}) != len(v):
            raise ValueError("lists an owner more than once; list each once")
        return v

    @field_validator("token_duration_seconds")
    @classmethod
    def _duration(cls, v: int) -> int:
        if not contract.TOKEN_DURATION_SECONDS.lo <= v <= contract.TOKEN_DURATION_SECONDS.hi:
            raise ValueError(f"sts:GetWebIdentityToken accepts {contract.TOKEN_DURATION_SECONDS} seconds; use e.g. 300")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> IdentityConfig:
        problems: list[tuple[str, Any, str]] = []
        total = 1 + len(self.additional_federated_credentials)
        if total > contract.MAX_FEDERATED_CREDENTIALS_PER_APP:
            problems.append(
                (
                    "additionalFederatedCredentials",
                    f"{len(self.additional_federated_credentials)} entries",
                    f"the app would hold {total} federated credentials, Entra allows "
                    f"{contract.MAX_FEDERATED_CREDENTIALS_PER_APP}; remove some or use a second app",
                )
            )
        names = [c.name for c in self.additional_federated_credentials]
        if len(set(names)) != len(names) or "ecs-task" in names:
            problems.append(
                (
                    "additionalFederatedCredentials",
                    names,
                    "names must be unique and not 'ecs-task'; rename the duplicates",
                )
            )
        _raise(problems)
        return self


class CosmosConfig(_Section):
    """The existing account, what is exported from it, and the role the worker gets on it."""

    cosmos_access_enabled: bool = True
    cosmos_account_name: str
    cosmos_resource_group: str = Field(pattern=r"^[\w().-]{1,90}$")
    cosmos_database: str
    cosmos_containers: list[str] = Field(min_length=1)
    export_containers: list[str] | None = None
    cosmos_role: Literal["custom", "builtinReader"] = "custom"
    cosmos_role_scope: Literal["container", "database"] = "container"
    log_analytics_workspace_id: str | None = None
    log_analytics_retention_days: int = Field(default=30, ge=30, le=730)
    #: The restore identity and its targets in this account (off by default).
    restore: RestoreConfig = RestoreConfig()

    @field_validator("cosmos_account_name")
    @classmethod
    def _account(cls, v: str) -> str:
        problem = contract.cosmos_account_problem(v)
        if problem:
            raise ValueError(f"a Cosmos DB account name {problem}")
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
            raise ValueError("a container is listed twice; list each once")
        return v

    @field_validator("log_analytics_workspace_id")
    @classmethod
    def _workspace(cls, v: str | None) -> str | None:
        if v is not None and not re.match(
            rf"^/subscriptions/{_UUID}/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$",
            v,
            re.IGNORECASE,
        ):
            raise ValueError(
                "must be a full workspace resource id "
                "(/subscriptions/<uuid>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>), "
                "or leave it unset to create one"
            )
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> CosmosConfig:
        problems: list[tuple[str, Any, str]] = []
        if self.export_containers is not None:
            unknown = [c for c in self.export_containers if c not in self.cosmos_containers]
            if unknown:
                problems.append(
                    (
                        "exportContainers",
                        unknown,
                        f"{', '.join(map(repr, unknown))} not in cosmosContainers {self.cosmos_containers}; "
                        "add them to cosmosContainers or fix the spelling",
                    )
                )
            if not self.export_containers:
                problems.append(
                    (
                        "exportContainers",
                        [],
                        "exports nothing; list at least one container or unset it to export all of cosmosContainers",
                    )
                )
        problems += self.restore.problems(
            source_database=self.cosmos_database,
            source_containers=self.cosmos_containers,
            exported=self.exported,
            reader_scope=self.cosmos_role_scope,
        )
        _raise(problems)
        return self

    @property
    def exported(self) -> list[str]:
        return list(self.export_containers if self.export_containers is not None else self.cosmos_containers)


class ScheduleConfig(_Section):
    """When EventBridge Scheduler starts the task, and how it retries."""

    schedule: str
    schedule_time_zone: str = "UTC"
    schedule_enabled: bool = True
    schedule_retry_attempts: int = Field(default=2, ge=0, le=185)
    schedule_max_event_age_seconds: int = Field(default=3600, ge=60, le=86400)
    #: Periodic full snapshots beside the incremental schedule (bounds stale deletes in LatestVersion mode).
    snapshot_schedule: str | None = None
    #: Its own model (components/fan_out_config.py): the schedule starts a Step Functions state machine
    #: that runs the export as plan, N shards, commit; None (the default): the single export task.
    fan_out: FanOutConfig | None = None

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


#: WorkerConfig fields for the task definition itself; every other field is a worker setting of the same name.
TASK_FIELDS = frozenset(
    {"export_mode", "cpu", "memory", "architecture", "log_retention_days", "vpc_id", "subnet_ids", "assign_public_ip"}
)


class WorkerConfig(_Section):
    """The Fargate task and the worker's tuning.

    Fields not in TASK_FIELDS are passed to the worker as is: each is named like
    the `WorkerSettings` field it sets, typed and bounded by the same contract
    values (components/program.py derives the environment from them).
    """

    export_mode: contract.RunMode = "incremental"
    min_consistency: str = contract.DEFAULT_MIN_CONSISTENCY
    change_feed_mode: contract.ChangeFeedMode = contract.DEFAULT_CHANGE_FEED_MODE
    priority: contract.Priority = "Low"
    concurrency: int = _bounded(contract.CONCURRENCY, contract.DEFAULT_CONCURRENCY)
    part_size_mb: int = _bounded(contract.PART_SIZE_MB, contract.DEFAULT_PART_SIZE_MB)
    compression: contract.Compression = contract.DEFAULT_COMPRESSION
    #: Request units per second the worker may spend (export and restore tasks alike); None: no budget.
    max_ru_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    #: Analytics tables (Parquet current state + change log) refreshed after every committed run.
    current_state: bool = contract.DEFAULT_CURRENT_STATE
    cpu: int = 1024
    memory: int = 2048
    architecture: Literal["ARM64", "X86_64"] = "ARM64"
    log_retention_days: int = 30
    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[str] = Field(min_length=1)
    assign_public_ip: bool = False

    @field_validator("min_consistency")
    @classmethod
    def _consistency(cls, v: str) -> str:
        # A str checked here, not a Literal: the message lists the levels weakest first.
        if v not in contract.CONSISTENCY_LEVELS:
            raise ValueError(f"not a Cosmos DB consistency level; use one of {', '.join(contract.CONSISTENCY_LEVELS)}")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, v: int) -> int:
        allowed = (
            1,
            3,
            5,
            7,
            14,
            30,
            60,
            90,
            120,
            150,
            180,
            365,
            400,
            545,
            731,
            1096,
            1827,
            2192,
            2557,
            2922,
            3288,
            3653,
        )
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

    @model_validator(mode="after")
    def _cross_field(self) -> WorkerConfig:
        problems: list[tuple[str, Any, str]] = []
        if self.change_feed_mode == "AllVersionsAndDeletes" and self.export_mode == "snapshot":
            problems.append(
                (
                    "changeFeedMode",
                    self.change_feed_mode,
                    "AllVersionsAndDeletes can only start from now or a continuation, not replay a snapshot; "
                    "use exportMode 'incremental' or changeFeedMode 'LatestVersion'",
                )
            )
        valid_memory = _fargate_memory(self.cpu)
        if valid_memory is None:
            problems.append(("cpu", self.cpu, "Fargate accepts 256, 512, 1024, 2048, 4096, 8192 or 16384"))
        elif self.memory not in valid_memory:
            problems.append(
                (
                    "memory",
                    self.memory,
                    f"Fargate with cpu {self.cpu} accepts {valid_memory[0]}..{valid_memory[-1]} MiB "
                    f"in steps of {valid_memory[1] - valid_memory[0]}",
                )
            )
        _raise(problems)
        return self

    def worker_settings(self) -> dict[str, Any]:
        """The fields the worker reads, by their WorkerSettings field name."""
        return {name: getattr(self, name) for name in type(self).model_fields if name not in TASK_FIELDS}


class StackConfig(BaseModel):
    """Everything one stack deploys, already checked, one section per concern (each a component's input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str
    region: str = Field(alias="aws:region")
    # Errors are listed in this order, then in each section's field order.
    bucket: BucketConfig
    cosmos: CosmosConfig
    schedule: ScheduleConfig
    worker: WorkerConfig
    identity: IdentityConfig
    # Its own model (components/alerting_config.py): the keys alertEmails, alertHttpsEndpoints, ... all default.
    alerting: AlertingConfig = AlertingConfig()
    # Its own model (components/operators_config.py): operators, operatorSessionMinutes; none by default.
    operators: OperatorsConfig = OperatorsConfig()
    # Its own model (components/analytics_config.py): analystPrincipals, athenaScanLimitGb, athenaResultsDays.
    analytics: AnalyticsConfig = AnalyticsConfig()

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        problem = contract.aws_region_problem(v)
        if problem:
            raise ValueError(f"{problem}; use a name like eu-west-1")
        return v

    @model_validator(mode="after")
    def _across_sections(self) -> StackConfig:
        problems: list[tuple[str, Any, str]] = []
        if self.schedule.snapshot_schedule is not None and self.worker.export_mode == "snapshot":
            problems.append(
                (
                    "snapshotSchedule",
                    self.schedule.snapshot_schedule,
                    "exportMode is 'snapshot', so every scheduled run is already a full snapshot; "
                    "unset snapshotSchedule or use exportMode 'incremental'",
                )
            )
        if self.schedule.fan_out is not None and (bad := set(self.bucket.export_prefix) & set(FAN_OUT_RESERVED)):
            problems.append(
                (
                    "exportPrefix",
                    self.bucket.export_prefix,
                    f"contains {''.join(sorted(bad))!r}, which the fan-out state machine would have to escape in "
                    "its plan key's intrinsic string (an escape no local interpreter checks); "
                    "rename the prefix or unset fanOut",
                )
            )
        problems += self.alerting.problems(
            schedule=self.schedule.schedule, change_feed_mode=self.worker.change_feed_mode
        )
        problems += self.operators.problems(restore_enabled=self.restore.enabled)
        problems += self.analytics.problems(current_state=self.worker.current_state)
        _raise(problems)
        return self

    @property
    def freshness_minutes(self) -> int:
        """freshnessMinutes, or 2 x the schedule's interval."""
        return self.alerting.effective_freshness_minutes(self.schedule.schedule)

    @property
    def restore(self) -> RestoreConfig:
        return self.cosmos.restore


#: Section name -> model; the config keys are the sections' field aliases, flat in the stack file.
SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation
    for name, field in StackConfig.model_fields.items()
    if isinstance(field.annotation, type)
    and issubclass(field.annotation, (_Section, AlertingConfig, OperatorsConfig, AnalyticsConfig))
}


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


def _raise(problems: list[tuple[str, Any, str]]) -> None:
    if problems:
        raise _CrossFieldError(problems)


# --- Keys --------------------------------------------------------------------


def _structured(annotation: Any) -> bool:
    """Lists and mappings arrive from `pulumi.Config` as JSON text."""
    args = (
        [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else [annotation]
    )
    return any(typing.get_origin(a) is list or (isinstance(a, type) and issubclass(a, BaseModel)) for a in args)


#: config key -> (section, field name); from the models' aliases.
_FIELDS: dict[str, tuple[str, str]] = {"aws:region": ("", "region")}
for _section, _model in SECTIONS.items():
    for _name, _field in _model.model_fields.items():
        _FIELDS[_field.alias or _name] = (_section, _name)
CONFIG_KEYS: tuple[str, ...] = tuple(_FIELDS)
_FIELD_TO_KEY = {field: key for key, (_, field) in _FIELDS.items()}
#: Keys without a default: the message for a missing one says so.
REQUIRED_KEYS = tuple(
    k
    for k in CONFIG_KEYS
    if k != "entraAppDisplayName"
    and (
        StackConfig.model_fields["region"] if k == "aws:region" else SECTIONS[_FIELDS[k][0]].model_fields[_FIELDS[k][1]]
    ).is_required()
)


def full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def load_stack_config(get: Callable[[str], str | None], stack: str, present_keys: Iterable[str] = ()) -> StackConfig:
    """Read every key through `get` (full key -> raw string or None) and validate.

    `present_keys` (every full key the stack sets) lets a misspelt key of this
    project fail instead of being silently ignored. Raises ConfigError listing
    every problem at once.
    """
    raw: dict[str, Any] = {"stack": stack, **{section: {} for section in SECTIONS}}
    raw["identity"]["entraAppDisplayName"] = f"{PROJECT}-{stack}"
    known = {full_key(k) for k in CONFIG_KEYS}
    problems: list[str] = [
        f"{k} is not a known setting: remove it or fix its spelling (see 'Config keys' in README.md)"
        for k in sorted(present_keys)
        if k.startswith(f"{PROJECT}:") and k not in known
    ]
    unparsed: set[str] = set()
    for key in CONFIG_KEYS:
        value = get(full_key(key))
        if value is None:
            continue
        section, field = _FIELDS[key]
        if section and _structured(SECTIONS[section].model_fields[field].annotation) and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                problems.append(
                    f"{full_key(key)} = {value!r}: not valid YAML/JSON structure ({e.msg}); "
                    "write it as a YAML list or mapping in the stack file"
                )
                unparsed.add(key)
                continue
        (raw[section] if section else raw)[key] = value
    try:
        config = StackConfig(**raw)
    except ValidationError as e:
        found = []
        for err in e.errors():
            if err["type"] == "missing" and _key_of(err["loc"]) in unparsed:
                continue  # already reported as unparseable
            found.extend(_describe(err))
        raise ConfigError(problems + found) from None
    if problems:
        raise ConfigError(problems)
    return config


def _key_of(loc: tuple[Any, ...]) -> str:
    """The config key an error location points at: ("bucket", "bucketName", ...) -> "bucketName"."""
    return str(loc[1] if loc and loc[0] in SECTIONS and len(loc) > 1 else loc[0]) if loc else ""


def _describe(err: Any) -> list[str]:
    if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), _CrossFieldError):
        return [f"{full_key(k)} = {json.dumps(v)}: {msg}" for k, v, msg in err["ctx"]["error"].problems]
    loc = [str(p) for p in err["loc"]]
    if loc and loc[0] in SECTIONS:
        loc = loc[1:]
    key = full_key(loc[0]) if loc else "(stack)"
    sub = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    if err["type"] == "missing":
        return [
            f"{key}{sub} is missing: set it with `pulumi config set {key} <value>` (see 'Config keys' in README.md)"
        ]
    if err["type"] == "extra_forbidden":
        return [f"{key}{sub} is not a known setting: remove it or fix its spelling (see 'Config keys' in README.md)"]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("greater_than_equal", "less_than_equal") and (bound := _bound_of(err["loc"])):
        msg += f"; use {bound[0]}..{bound[1]}"  # as the worker says it (settings.py)
    return [f"{key}{sub} = {json.dumps(err.get('input'), default=str)}: {msg}"]


def _bound_of(loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """(lo, hi) of a field bounded on both sides, for the fix of an out-of-range value."""
    if len(loc) != 2 or loc[0] not in SECTIONS or loc[1] not in _FIELDS:
        return None
    info = SECTIONS[str(loc[0])].model_fields[_FIELDS[str(loc[1])][1]]
    lo = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    return (int(lo), int(hi)) if isinstance(lo, int) and isinstance(hi, int) else None
