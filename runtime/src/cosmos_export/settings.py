"""The worker's settings: read once from the `contract.Env` variables, CLI flags on top.

Every problem is reported as `ENV_VAR='bad value': what is wrong; fix`, all at
once, so an operator fixes the task definition (or the Pulumi stack config that
produces it) in one go.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cosmos_export import contract
from cosmos_export.contract import Env

#: Set by the ECS agent inside every task: its presence means "running in ECS".
ECS_METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_KMS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+$")


class SettingsError(Exception):
    """Invalid worker settings; `problems` holds one line per bad variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid worker settings:\n  - " + "\n  - ".join(problems))


def _env(name: str, default: Any = ..., *, fix: str, bound: contract.Bound | None = None, **kw: Any) -> Any:
    """A field read from environment variable `name`; `fix` is shown with a bad value."""
    if bound is not None:
        kw.update(ge=bound.lo, le=bound.hi)
    return Field(default, validation_alias=AliasChoices(name), json_schema_extra={"fix": fix}, **kw)


def _choices(values: tuple[str, ...]) -> str:
    return " or ".join(f"'{v}'" for v in values) if len(values) == 2 else ", ".join(values)


def fix_for(field: str) -> str:
    """The fix shown with a bad value of `field`."""
    extra = WorkerSettings.model_fields[field].json_schema_extra
    return str(extra["fix"]) if isinstance(extra, dict) and "fix" in extra else "see runtime/README.md"


class WorkerSettings(BaseSettings):
    """Everything the worker needs, from the environment names in `contract.Env`."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="forbid", frozen=True, env_ignore_empty=True)

    # Identity
    identity_mode: contract.IdentityMode = _env(
        Env.IDENTITY_MODE,
        "workload",
        fix="use 'workload' (ECS task role + Entra federation) or 'laptop' (your az login + AWS profile)",
    )
    aws_region: str = _env(Env.AWS_REGION, fix="set it to the AWS region of the task, e.g. eu-west-1")
    azure_tenant_id: str | None = _env(
        Env.AZURE_TENANT_ID, None, fix="set it to the Entra tenant id (stack output azureTenantId)"
    )
    azure_client_id: str | None = _env(
        Env.AZURE_CLIENT_ID, None, fix="set it to the Entra application's client id (stack output azureClientId)"
    )
    azure_authority_host: str | None = _env(
        Env.AZURE_AUTHORITY_HOST, None, fix="use an https URL such as https://login.microsoftonline.com, or unset it"
    )
    token_duration_seconds: int = _env(
        Env.TOKEN_DURATION_SECONDS,
        contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS,
        bound=contract.TOKEN_DURATION_SECONDS,
        fix=f"use {contract.TOKEN_DURATION_SECONDS} (Pulumi config cosmos-s3-export:tokenDurationSeconds)",
    )
    sts_endpoint: str | None = _env(
        Env.STS_ENDPOINT, None, fix="use an https URL, or unset it to use https://sts.<region>.amazonaws.com"
    )
    # Source
    cosmos_endpoint: str = _env(
        Env.COSMOS_ENDPOINT,
        fix="use the account URL, e.g. https://<account>.documents.azure.com:443/ (stack output cosmosEndpoint)",
    )
    cosmos_account: str | None = _env(
        Env.COSMOS_ACCOUNT, None, fix="use the Cosmos account name (lowercase letters, digits, '-')"
    )
    cosmos_database: str = _env(
        Env.COSMOS_DATABASE, fix="set it to the Cosmos database name (Pulumi config cosmos-s3-export:cosmosDatabase)"
    )
    cosmos_containers: Annotated[tuple[str, ...], NoDecode] = _env(
        Env.COSMOS_CONTAINERS, fix="list container names separated by commas, e.g. orders,customers"
    )
    cosmos_tls_verify: bool | str = _env(
        Env.COSMOS_TLS_VERIFY, True, fix="use 'true', 'false' (local emulators only) or the path of a CA bundle file"
    )
    min_consistency: contract.ConsistencyLevel = _env(
        Env.MIN_CONSISTENCY,
        contract.DEFAULT_MIN_CONSISTENCY,
        fix=f"use one of {', '.join(contract.CONSISTENCY_LEVELS)}",
    )
    change_feed_mode: contract.ChangeFeedMode = _env(
        Env.CHANGE_FEED_MODE, contract.DEFAULT_CHANGE_FEED_MODE, fix=f"use {_choices(contract.CHANGE_FEED_MODES)}"
    )
    priority: contract.Priority | None = _env(
        Env.PRIORITY, None, fix=f"use {_choices(contract.PRIORITIES)}, or unset it"
    )
    query_filter: str | None = _env(
        Env.QUERY_FILTER, None, fix="give only the condition after WHERE, e.g. c.status = 'open'"
    )
    snapshot_source: contract.SnapshotSource = _env(
        Env.SNAPSHOT_SOURCE, "changefeed", fix=f"use {_choices(contract.SNAPSHOT_SOURCES)}"
    )
    page_size: int = _env(
        Env.PAGE_SIZE, contract.DEFAULT_PAGE_SIZE, bound=contract.PAGE_SIZE, fix=f"use {contract.PAGE_SIZE}"
    )
    # Destination
    bucket: str = _env(Env.BUCKET, fix="set it to the export bucket name (stack output bucketName)")
    prefix: str = _env(
        Env.PREFIX,
        contract.DEFAULT_PREFIX,
        fix="use the key prefix without leading or trailing '/', e.g. cosmos (stack output exportPrefix)",
    )
    kms_key_arn: str | None = _env(
        Env.KMS_KEY_ARN, None, fix="use the full KMS key ARN (stack output kmsKeyArn), or unset it"
    )
    s3_endpoint: str | None = _env(
        Env.S3_ENDPOINT, None, fix="use an http(s) URL, or unset it to use the regional S3 endpoint"
    )
    # Tuning (the stack's defaults are the same contract values)
    concurrency: int = _env(
        Env.CONCURRENCY, contract.DEFAULT_CONCURRENCY, bound=contract.CONCURRENCY, fix=f"use {contract.CONCURRENCY}"
    )
    part_size_mb: int = _env(
        Env.PART_SIZE_MB, contract.DEFAULT_PART_SIZE_MB, bound=contract.PART_SIZE_MB, fix=f"use {contract.PART_SIZE_MB}"
    )
    compression: contract.Compression = _env(
        Env.COMPRESSION, contract.DEFAULT_COMPRESSION, fix=f"use {_choices(contract.COMPRESSIONS)}"
    )
    log_level: contract.LogLevel = _env(Env.LOG_LEVEL, "INFO", fix="use DEBUG, INFO, WARNING or ERROR")
    #: Refresh the analytics tables (tables.py) after every committed run.
    current_state: bool = _env(
        Env.CURRENT_STATE,
        contract.DEFAULT_CURRENT_STATE,
        fix="use 'true' or 'false' (Pulumi config cosmos-s3-export:currentState)",
    )
    # Metrics: the Stack dimension (the task definition sets the Pulumi stack's name)
    stack: str = _env(
        Env.STACK,
        "local",
        pattern=r"^[A-Za-z0-9._-]{1,255}$",
        fix="use the Pulumi stack name (letters, digits, '.', '_', '-'), or unset it",
    )
    # Restore and drills (the restore task); CLI flags override
    restore_target_database: str | None = _env(
        Env.RESTORE_TARGET_DATABASE,
        None,
        fix="set it to the database of the restore targets (Pulumi config restore.targetDatabase)",
    )
    #: (source container, target container) pairs: where `drill` (and `restore` by default) writes each source.
    restore_targets: Annotated[tuple[tuple[str, str], ...], NoDecode] = _env(
        Env.RESTORE_TARGETS,
        (),
        fix="list source=target container pairs separated by commas, e.g. orders=orders-restore",
    )
    max_ru_per_second: float | None = _env(
        Env.MAX_RU_PER_SECOND,
        None,
        gt=0,
        allow_inf_nan=False,
        fix="use a positive number of request units per second (Pulumi config cosmos-s3-export:maxRuPerSecond), "
        "or unset it for no budget",
    )
    #: Documents upserted between two restore progress checkpoints: at most this many are redone after a kill.
    restore_batch_documents: int = _env(
        Env.RESTORE_BATCH_DOCUMENTS,
        contract.DEFAULT_RESTORE_BATCH_DOCUMENTS,
        bound=contract.RESTORE_BATCH_DOCUMENTS,
        fix=f"use {contract.RESTORE_BATCH_DOCUMENTS}",
    )

    # --- field checks ------------------------------------------------------

    @field_validator("cosmos_containers", mode="before")
    @classmethod
    def _split_containers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part.strip() for part in v.split(",")]
        if isinstance(v, (list, tuple)):
            names = [n for n in v if n]
            if not names:
                raise ValueError("no container names")
            bad = [f"{n!r} ({p})" for n in names if (p := contract.cosmos_id_problem(n))]
            if bad:
                raise ValueError(f"{', '.join(bad)} is not a Cosmos container id")
            if len(set(names)) != len(names):
                raise ValueError("a container is listed twice")
            return tuple(names)
        return v

    @field_validator("restore_targets", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        if isinstance(v, str):
            pairs = []
            for item in (part.strip() for part in v.split(",")):
                if not item:
                    continue
                source, sep, target = (x.strip() for x in item.partition("="))
                if not sep or not source or not target:
                    raise ValueError(f"{item!r} is not a source=target pair")
                pairs.append((source, target))
            v = pairs
        if isinstance(v, (list, tuple)):
            pairs = [tuple(p) for p in v]
            bad = [f"{n!r} ({p})" for pair in pairs for n in pair if (p := contract.cosmos_id_problem(n))]
            if bad:
                raise ValueError(f"{', '.join(bad)} is not a Cosmos container id")
            sources = [s for s, _ in pairs]
            if len(set(sources)) != len(sources):
                raise ValueError("a source container is mapped twice")
            return tuple(pairs)
        return v

    @field_validator("cosmos_tls_verify", mode="before")
    @classmethod
    def _tls(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return v
        text = str(v).strip()
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        if not Path(text).is_file():
            raise ValueError("is neither true/false nor an existing CA bundle file")
        return text

    @field_validator("aws_region")
    @classmethod
    def _region(cls, v: str) -> str:
        problem = contract.aws_region_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("azure_tenant_id", "azure_client_id")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        if v is not None and not re.match(_UUID, v):
            raise ValueError("is not a GUID")
        return v

    @field_validator("azure_authority_host", "sts_endpoint")
    @classmethod
    def _https_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("is not an https URL")
        return v.rstrip("/")

    @field_validator("s3_endpoint")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname):
            raise ValueError("is not an http(s) URL")
        return v

    @field_validator("cosmos_endpoint")
    @classmethod
    def _cosmos_endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        # The SDK refuses AAD tokens over plain http, so only https can work.
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("is not an https URL")
        return v

    @field_validator("cosmos_account")
    @classmethod
    def _account(cls, v: str | None) -> str | None:
        problem = None if v is None else contract.cosmos_account_problem(v)
        if problem:
            raise ValueError(f"is not a Cosmos account name: it {problem}")
        return v

    @field_validator("cosmos_database", "restore_target_database")
    @classmethod
    def _database(cls, v: str | None) -> str | None:
        problem = None if v is None else contract.cosmos_id_problem(v)
        if problem:
            raise ValueError(f"is not a Cosmos database id: it {problem}")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        problem = contract.bucket_name_problem(v)
        if problem:
            raise ValueError(f"is not a valid S3 bucket name: it {problem}")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        problem = contract.prefix_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("kms_key_arn")
    @classmethod
    def _kms(cls, v: str | None) -> str | None:
        if v is not None and not _KMS_ARN.match(v):
            raise ValueError("is not a KMS key ARN")
        return v

    @field_validator("query_filter")
    @classmethod
    def _filter(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        # The filter is a WHERE condition, not a statement: keep it from changing the query's shape.
        if re.match(r"(?i)^(select|where)\b", v) or ";" in v or "--" in v:
            raise ValueError("must be only the condition after WHERE (no SELECT/WHERE keyword, ';' or '--')")
        return v

    # --- cross-field checks ------------------------------------------------

    @model_validator(mode="after")
    def _cross(self) -> "WorkerSettings":
        problems: list[tuple[str, Any, str]] = []
        if self.identity_mode == "laptop" and os.environ.get(ECS_METADATA_ENV):
            problems.append(
                (
                    "identity_mode",
                    "laptop",
                    f"refused inside ECS ({ECS_METADATA_ENV} is set): a task must use its own role; "
                    f"set {Env.IDENTITY_MODE}=workload",
                )
            )
        if self.identity_mode == "workload":
            for name in ("azure_tenant_id", "azure_client_id"):
                if getattr(self, name) is None:
                    problems.append((name, None, f"is required in workload identity mode; {fix_for(name)}"))
        if self.query_filter and self.snapshot_source != "query":
            problems.append(
                (
                    "snapshot_source",
                    self.snapshot_source,
                    f"{Env.QUERY_FILTER} only applies to query snapshots; "
                    f"set {Env.SNAPSHOT_SOURCE}=query or unset {Env.QUERY_FILTER}",
                )
            )
        if self.account_name is None:
            problems.append(
                (
                    "cosmos_account",
                    None,
                    f"cannot be derived from {Env.COSMOS_ENDPOINT}={self.cosmos_endpoint!r}; "
                    f"set {Env.COSMOS_ACCOUNT} to the account name",
                )
            )
        if problems:
            raise _CrossFieldError(problems)
        return self

    # --- derived values ----------------------------------------------------

    @property
    def account_name(self) -> str | None:
        """Account name used in S3 keys: explicit, or the first label of the endpoint's DNS name."""
        if self.cosmos_account:
            return self.cosmos_account
        host = urlsplit(self.cosmos_endpoint).hostname or ""
        try:
            ipaddress.ip_address(host)
            return None
        except ValueError:
            pass
        label = host.split(".")[0]
        return label if contract.cosmos_account_problem(label) is None else None

    def restore_target_for(self, container: str) -> str | None:
        """The restore target (scratch) container mapped to `container` in EXPORT_RESTORE_TARGETS, if any."""
        return dict(self.restore_targets).get(container)

    @property
    def sts_url(self) -> str:
        """STS endpoint: GetWebIdentityToken only exists on the regional endpoints."""
        if self.sts_endpoint:
            return self.sts_endpoint
        suffix = "amazonaws.com.cn" if self.aws_region.startswith("cn-") else "amazonaws.com"
        return f"https://sts.{self.aws_region}.{suffix}"

    @property
    def part_size_bytes(self) -> int:
        return self.part_size_mb * 1024 * 1024


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[tuple[str, Any, str]]):
        self.problems = problems
        super().__init__("; ".join(p[2] for p in problems))


def env_name(field: str) -> str:
    alias = WorkerSettings.model_fields[field].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else field  # type: ignore[return-value]


def environment(**values: Any) -> dict[str, Any]:
    """The environment variables that give the worker these settings (keyword = WorkerSettings field name).

    What the Pulumi program puts in the task definition. None leaves a variable
    out; lists and tuples become comma-separated text, booleans 'true'/'false',
    numbers text; anything else (a string, a Pulumi output) is passed as is.
    """
    unknown = sorted(set(values) - set(WorkerSettings.model_fields))
    if unknown:
        raise ValueError(f"not worker settings: {', '.join(unknown)}; add the field to WorkerSettings first")
    env: dict[str, Any] = {}
    for field, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        env[env_name(field)] = value
    return env


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return repr(str(value))


def load_settings(**overrides: Any) -> WorkerSettings:
    """Settings from the environment with non-None `overrides` (CLI flags, by field name) on top.

    Raises SettingsError naming each bad variable, its value and the fix.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(WorkerSettings.model_fields))
    if unknown:
        raise SettingsError([f"unknown setting(s) {', '.join(unknown)}"])
    try:
        return WorkerSettings(**overrides)
    except ValidationError as e:
        raise SettingsError(_describe(e, overrides)) from None


def _describe(error: ValidationError, overrides: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    fields_by_alias = {env_name(f): f for f in WorkerSettings.model_fields}
    for err in error.errors():
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _CrossFieldError):
            problems.extend(f"{env_name(f)}={_shown(v)}: {msg}" for f, v, msg in cause.problems)
            continue
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = fields_by_alias.get(loc, loc)
        name = env_name(field) if field in WorkerSettings.model_fields else loc
        value = overrides.get(field, os.environ.get(name)) if err["type"] != "missing" else None
        if err["type"] == "missing":
            what = "is required"
        elif err["type"] == "value_error":
            what = str(cause) if cause else err["msg"]
        else:
            what = err["msg"][0].lower() + err["msg"][1:]
        problems.append(
            f"{name}={_shown(value)}: {what}; {fix_for(field) if field in WorkerSettings.model_fields else 'see runtime/README.md'}"
        )
    return problems
