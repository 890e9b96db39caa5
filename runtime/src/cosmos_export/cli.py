"""`cosmos-export run|plan|commit|doctor|verify|status|materialize|parts|restore|drill`: settings from the environment, flags on top.

Exit codes: 0 ok, 1 export/verify/doctor/restore failure (materialize: a corrupted part), a drill mismatch, or
(status) a container older than --max-age or never committed; 2 invalid settings or usage (and a restore or
materialize refused before writing anything); 143 stopped by SIGTERM (ECS stop) before commit (a restore: after
its last checkpointed batch). On failure the last line on stderr is the reason.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from typing import Any, Optional

import typer

from cosmos_export import audit, contract
from cosmos_export.settings import SettingsError, WorkerSettings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Export Azure Cosmos DB containers to S3 with workload identity federation (no secrets).",
)

EXIT_FAILED, EXIT_SETTINGS, EXIT_STOPPED = 1, 2, 143


# typer takes an Enum for a choice; these are built from the contract's Literals.
Mode = Enum("Mode", {m: m for m in contract.RUN_MODES}, type=str)  # type: ignore[misc]  # functional Enum API
OutputFormat = Enum("OutputFormat", {"jsonl": "jsonl", "parquet": "parquet"}, type=str)
PartsFormat = Enum("PartsFormat", {"text": "text", "json": "json"}, type=str)
IdentityMode = Enum("IdentityMode", {m: m for m in contract.IDENTITY_MODES}, type=str)  # type: ignore[misc]


def _fail(reason: str, code: int = EXIT_FAILED) -> None:
    typer.echo(f"error: {reason}", err=True)
    raise typer.Exit(code)


def _settings(**flags: Any) -> WorkerSettings:
    flags = {k: (v.value if isinstance(v, Enum) else v) for k, v in flags.items()}
    if flags.get("cosmos_containers") is not None:
        flags["cosmos_containers"] = ",".join(flags["cosmos_containers"])
    try:
        return load_settings(**flags)
    except SettingsError as e:
        for problem in e.problems[:-1]:
            typer.echo(f"  - {problem}", err=True)
        _fail(f"invalid setting: {e.problems[-1]}", EXIT_SETTINGS)
        raise AssertionError("unreachable") from None


@contextlib.contextmanager
def _materialize_errors(log: Any) -> Iterator[None]:
    """A corrupt part fails (exit 1); a refusal (no committed state, unknown sequence, ...) exits 2, and
    either way nothing was written: one rule for materialize's JSON Lines and Parquet outputs."""
    from cosmos_export import materialize as mat

    try:
        yield
    except mat.CorruptPartError as e:
        log.error("materialize_failed", reason=str(e))
        _fail(str(e))
    except mat.MaterializeError as e:
        log.error("materialize_refused", reason=str(e))
        _fail(f"refused, nothing was written: {e}", EXIT_SETTINGS)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[tuple[threading.Event, list[str]]]:
    """SIGTERM/SIGINT set the event (the work stops at its next safe point; ECS gives 30 s by default) and
    append the signal's name to the list; the previous handlers come back afterwards."""
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop, stopped_by
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# Flags shared by the commands (None = take the environment's value).
_IDENTITY = typer.Option(
    None, "--identity-mode", help="workload (ECS task role, default) or laptop (az login + AWS profile)"
)
_CONTAINER = typer.Option(
    None, "--container", "-c", help="Container to export (repeat); default EXPORT_COSMOS_CONTAINERS"
)
_BUCKET = typer.Option(None, "--bucket", help="Export bucket; default EXPORT_BUCKET")
_PREFIX = typer.Option(None, "--prefix", help="Key prefix; default EXPORT_PREFIX")
_LOG = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR")


@app.command()
def run(
    mode: Optional[Mode] = typer.Option(
        None, "--mode", help="snapshot (everything) or incremental (changes since the checkpoint)"
    ),
    fan_out_run: Optional[str] = typer.Option(
        None, "--run", help="Fan-out: the planned run id (from `plan`); read one shard of it, never commit"
    ),
    shard: Optional[str] = typer.Option(None, "--shard", help="Fan-out: the shard to read, K/N (with --run)"),
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Feed ranges read in parallel"),
    snapshot_source: Optional[str] = typer.Option(None, "--snapshot-source", help="changefeed or query"),
    query_filter: Optional[str] = typer.Option(None, "--where", help="WHERE condition for a query snapshot"),
    max_ru_per_second: Optional[float] = typer.Option(
        None, "--max-ru-per-second", help="Request units per second the run may spend; default EXPORT_MAX_RU_PER_SECOND"
    ),
    log_level: Optional[str] = _LOG,
) -> None:
    """Export the configured containers and commit the run (manifest, then checkpoint); with --run and
    --shard, read one shard of a planned fan-out run (parts and a shard result, no commit)."""
    from cosmos_export.export import ExportError, ExportInterrupted, run_export

    if (fan_out_run is None) != (shard is None):
        given, missing = ("--run", "--shard") if shard is None else ("--shard", "--run")
        _fail(f"{given} needs {missing}: a fan-out shard is `run --run ID --shard K/N`", EXIT_SETTINGS)
    if fan_out_run is not None and mode is not None:
        _fail("--mode is the plan's, not a shard's: drop --mode (the run was planned with it)", EXIT_SETTINGS)
    if fan_out_run is None and mode is None:
        _fail(
            "Missing option '--mode': use --mode snapshot or --mode incremental "
            "(a fan-out shard: --run ID --shard K/N)",
            EXIT_SETTINGS,
        )

    settings = _settings(
        identity_mode=identity_mode,
        cosmos_containers=containers,
        bucket=bucket,
        prefix=prefix,
        concurrency=concurrency,
        snapshot_source=snapshot_source,
        query_filter=query_filter,
        max_ru_per_second=max_ru_per_second,
        log_level=log_level,
    )
    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    # A signal stops reading new pages; the run aborts its uploads and commits nothing.
    with _stop_on_signals() as (stop, stopped_by):
        try:
            if fan_out_run is not None and shard is not None:
                from cosmos_export.fanout import run_shard

                try:
                    run_shard(settings, fan_out_run, shard, stop=stop, log=log)
                except ValueError as e:
                    _fail(str(e), EXIT_SETTINGS)
            else:
                assert mode is not None
                run_export(settings, mode.value, stop=stop, log=log)
        except ExportInterrupted as e:
            reason = f"{stopped_by[0]} received: {e}" if stopped_by else str(e)
            log.error("export_failed", reason=reason)
            _fail(reason, EXIT_STOPPED)
        except ExportError as e:
            log.error("export_failed", reason=str(e))
            _fail(str(e))


@contextlib.contextmanager
def _fan_out_errors(log: Any) -> Iterator[None]:
    """`plan` and `commit`: bad input (refused before anything is written) exits 2, a failed run 1."""
    from cosmos_export.export import ExportError

    try:
        yield
    except ValueError as e:
        _fail(str(e), EXIT_SETTINGS)
    except ExportError as e:
        log.error("export_failed", reason=str(e))
        _fail(str(e))


@app.command()
def plan(
    mode: Mode = typer.Option(..., "--mode", help="snapshot or incremental, as for `run`"),
    shards: int = typer.Option(..., "--shards", help="Split each container's feed ranges into at most N shards"),
    execution: str = typer.Option(..., "--execution", help="Name of the plan document (the Step Functions execution)"),
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    log_level: Optional[str] = _LOG,
) -> None:
    """Fan-out: plan one run of every container over at most N shards; prints the plan document."""
    import json as json_module

    from cosmos_export.fanout import plan_fan_out

    settings = _settings(cosmos_containers=containers, bucket=bucket, prefix=prefix, log_level=log_level)
    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    with _fan_out_errors(log):
        document = plan_fan_out(settings, mode.value, shards, execution, log=log)
    typer.echo(json_module.dumps(document))


@app.command()
def commit(
    fan_out_run: str = typer.Option(..., "--run", help="The planned run id whose shards have all been read"),
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    log_level: Optional[str] = _LOG,
) -> None:
    """Fan-out: check every shard's result and parts, then commit one manifest and the checkpoint per container."""
    from cosmos_export.fanout import commit_fan_out

    settings = _settings(cosmos_containers=containers, bucket=bucket, prefix=prefix, log_level=log_level)
    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    with _fan_out_errors(log):
        commit_fan_out(settings, fan_out_run, log=log)


@app.command()
def doctor(
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
) -> None:
    """Check every link: AWS identity, AWS token, Entra exchange, Cosmos access and consistency, S3 write."""
    from cosmos_export.doctor import Doctor

    settings = _settings(identity_mode=identity_mode, cosmos_containers=containers, bucket=bucket, prefix=prefix)
    audit.configure_logging("WARNING")
    checks = Doctor(settings, echo=typer.echo)
    if not checks.run():
        broken = checks.results[-1]
        _fail(f"{broken.step}: {broken.detail}")
    for warning in checks.warnings:
        typer.echo(f"WARNING: {warning}")
    typer.echo(f"all checks passed{f' with {len(checks.warnings)} warning(s)' if checks.warnings else ''}")


@app.command()
def verify(
    run_id: str = typer.Option(..., "--run", help="Run id to verify (from the manifest or the run's log)"),
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
) -> None:
    """Re-read a committed run's parts and compare count, bytes and sha256 with its manifest."""
    from cosmos_export import identity, layout
    from cosmos_export.storage import client as s3_client
    from cosmos_export.verify import RunNotCommittedError, verify_run

    settings = _settings(cosmos_containers=containers, bucket=bucket, prefix=prefix)
    audit.configure_logging(settings.log_level)
    s3 = s3_client(settings, identity.aws_session(settings))
    found = False
    for name in settings.cosmos_containers:
        target = layout.ExportTarget(
            settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, name
        )
        try:
            report = verify_run(s3, target, run_id)
        except RunNotCommittedError:
            continue
        found = True
        for mismatch in report.mismatches:
            typer.echo(f"MISMATCH {mismatch}")
        typer.echo(
            f"{name}: run {run_id} sequence {report.sequence}: {report.parts_checked} part(s), "
            f"{report.documents} document(s), {report.bytes} bytes, "
            f"{'ok' if report.ok else f'{len(report.mismatches)} mismatch(es)'}"
        )
        if not report.ok:
            _fail(f"run {run_id} of {name} does not match its manifest: {report.mismatches[0]}")
    if not found:
        _fail(
            f"run {run_id} is not committed for any of {', '.join(settings.cosmos_containers)} under "
            f"s3://{settings.bucket}/{settings.prefix}/"
        )


def parse_duration(text: str) -> float:
    """'90s', '45m', '26h', '2d' (or plain seconds) -> seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--max-age {text!r} is not a duration: use a positive number with s, m, h or d, e.g. 26h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@app.command()
def status(
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    max_age: Optional[str] = typer.Option(
        None, "--max-age", help="Exit 1 if a container's last commit is older (or it has none), e.g. 26h, 90m, 2d"
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts instead of the table"),
) -> None:
    """Per container: last commit (sequence, time, age, documents, bytes), lag, schema, checkpoint, orphans, drill.

    Reads the bucket only (ListObjectsV2, GetObject, ListMultipartUploads); never writes.
    """
    import json as json_module

    from cosmos_export import identity
    from cosmos_export import status as status_module
    from cosmos_export.export import s3_client

    try:
        limit = parse_duration(max_age) if max_age is not None else None
    except ValueError as e:
        _fail(str(e), EXIT_SETTINGS)
    settings = _settings(identity_mode=identity_mode, cosmos_containers=containers, bucket=bucket, prefix=prefix)
    audit.configure_logging("WARNING")
    s3 = s3_client(settings, identity.aws_session(settings))
    statuses = status_module.collect(
        s3,
        bucket=settings.bucket,
        prefix=settings.prefix,
        account=settings.account_name or "",
        database=settings.cosmos_database,
        containers=settings.cosmos_containers,
    )
    stale = [s.container for s in statuses if limit is not None and s.too_old(limit)]
    if as_json:
        typer.echo(
            json_module.dumps(
                {
                    "bucket": settings.bucket,
                    "prefix": settings.prefix,
                    "max_age_seconds": limit,
                    "stale": stale,
                    "containers": [s.as_json() for s in statuses],
                },
                indent=2,
            )
        )
    else:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 200)  # piped: the full table, not 80 columns
        console.print(status_module.table(statuses, max_age_seconds=limit))
        for s in statuses:
            for problem in s.problems:
                console.print(f"[red]{s.container}: {problem}[/red]")
    if stale:
        _fail(f"older than --max-age {max_age} (or never committed): {', '.join(stale)}")


def _parse_time(value: str | None) -> Any:
    if value is None:
        return None
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--as-of={value!r} is not an ISO 8601 time; use e.g. 2026-12-01T06:00:00Z", EXIT_SETTINGS)
        raise AssertionError("unreachable") from None
    if parsed.tzinfo is None:
        _fail(f"--as-of={value!r} has no time zone; add one, e.g. {value}Z for UTC", EXIT_SETTINGS)
    return parsed


@app.command()
def materialize(
    container: str = typer.Option(..., "--container", "-c", help="Exported container whose state to rebuild"),
    to: Optional[str] = typer.Option(
        None,
        "--to",
        help="Local path or s3://bucket/key ending in .jsonl, .jsonl.gz or "
        ".jsonl.zst (compression by suffix), or a folder/prefix ending in /; with --format parquet a folder or "
        "s3:// prefix, or none: refresh the container's analytics tables in place",
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat["jsonl"], "--format", help="jsonl (a state file) or parquet (current-state table files)"
    ),
    sequence: Optional[int] = typer.Option(None, "--sequence", help="Committed sequence (default: the latest)"),
    as_of: Optional[str] = typer.Option(
        None, "--as-of", help="The state of the last run finished at or before this ISO 8601 time"
    ),
    keep_system_properties: bool = typer.Option(
        False, "--keep-system-properties", help="Keep _rid, _self, _etag, _attachments, _ts, _lsn"
    ),
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    log_level: Optional[str] = _LOG,
) -> None:
    """Rebuild a container's state as of a committed point into JSON Lines, with a report of what it cannot know."""
    from cosmos_export import identity, layout
    from cosmos_export import materialize as mat
    from cosmos_export.export import s3_client

    settings = _settings(bucket=bucket, prefix=prefix, log_level=log_level)
    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    when = _parse_time(as_of)
    try:
        target = layout.ExportTarget(
            settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, container
        )
    except ValueError as e:
        _fail(f"--container {container!r}: {e}", EXIT_SETTINGS)
    if output_format.value == "parquet":
        _materialize_parquet(settings, target, to, sequence, when, log)
        return
    if to is None:
        _fail("--to is required with --format jsonl: give a path, an s3:// key or a folder", EXIT_SETTINGS)
        raise AssertionError("unreachable")
    with _materialize_errors(log):
        dest = mat.destination(to, container)
        report = mat.materialize_to(
            s3_client(settings, identity.aws_session(settings)),
            target,
            dest,
            sequence=sequence,
            as_of=when,
            keep_system_properties=keep_system_properties,
        )
    for line in report.summary_lines():
        typer.echo(line)
    typer.echo(f"wrote {dest.url} ({report.documents} document(s)); report {dest.report_url}")
    log.info(
        "materialized",
        output=dest.url,
        report=dest.report_url,
        sequence=report.sequence,
        documents=report.documents,
        deletes_applied=report.deletes_applied,
        ttl_expiries_applied=report.ttl_expiries_applied,
        unknown_delete_incrementals=report.unknown_delete_incrementals,
    )


def _materialize_parquet(
    settings: WorkerSettings, target: Any, to: str | None, sequence: Any, when: Any, log: Any
) -> None:
    from cosmos_export import identity, tables
    from cosmos_export.export import s3_client

    s3 = s3_client(settings, identity.aws_session(settings))
    with _materialize_errors(log):
        if to is None:
            if sequence is not None or when is not None:
                _fail(
                    "--sequence/--as-of need --to: the tables in place are always the latest committed state; "
                    "give a folder or s3:// prefix for an earlier one",
                    EXIT_SETTINGS,
                )
            refreshed = tables.refresh(s3, target, kms_key_arn=settings.kms_key_arn, log=log)
            typer.echo(
                f"{target.container}: tables at sequence {refreshed.sequence}; current state "
                f"{'rewritten' if refreshed.current_written else 'already current'} ({refreshed.documents} "
                f"document(s)), change-log files written for sequences {refreshed.changes_written or 'none'}"
            )
            return
        report, files = tables.materialize_parquet(s3, target, to, sequence=sequence, as_of=when)
    for line in report.summary_lines():
        typer.echo(line)
    typer.echo(f"wrote {len(files)} Parquet file(s) ({report.documents} document(s)): {', '.join(files)}")


@app.command()
def parts(
    container: str = typer.Option(..., "--container", "-c", help="Exported container"),
    sequence: Optional[int] = typer.Option(None, "--sequence", help="Only this committed sequence"),
    output_format: PartsFormat = typer.Option(PartsFormat["text"], "--format", help="text (tab-separated) or json"),
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
) -> None:
    """The committed parts (S3 URL, sequence, run id, documents): exactly what any reader should read."""
    import json as json_module

    from cosmos_export import identity, layout
    from cosmos_export.commit import CheckpointError, CommitStore
    from cosmos_export.export import s3_client

    settings = _settings(bucket=bucket, prefix=prefix)
    audit.configure_logging("WARNING")
    try:
        target = layout.ExportTarget(
            settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, container
        )
    except ValueError as e:
        _fail(f"--container {container!r}: {e}", EXIT_SETTINGS)
    try:
        manifests = CommitStore(s3_client(settings, identity.aws_session(settings)), target).committed_manifests()
    except CheckpointError as e:
        _fail(str(e))
    if sequence is not None:
        manifests = [m for m in manifests if m.sequence == sequence]
        if not manifests:
            _fail(f"--sequence {sequence} is not committed under s3://{target.bucket}/{target.manifests_prefix}")
    rows = [
        {
            "url": f"s3://{target.bucket}/{p.key}",
            "sequence": m.sequence,
            "run_id": m.run_id,
            "documents": p.documents,
            "version_id": p.version_id,
        }
        for m in manifests
        for p in m.parts
    ]
    if output_format.value == "json":
        typer.echo(json_module.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['url']}\t{r['sequence']}\t{r['run_id']}\t{r['documents']}")


def _restore_session(settings: WorkerSettings, work: Any) -> Any:
    """Entra credential, Cosmos client and S3 client for a restore or drill; SIGTERM stops after a batch."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.cosmos import exceptions as cosmos_exceptions

    from cosmos_export import identity, restore, source
    from cosmos_export.export import s3_client

    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    with _stop_on_signals() as (stop, stopped_by):
        try:
            session = identity.aws_session(settings)
            s3 = s3_client(settings, session)
            client = source.cosmos_client(settings, identity.azure_credential(settings, session))
            return work(client=client, s3=s3, stop=stop, log=log)
        except restore.RestoreRefused as e:
            log.error("restore_refused", reason=str(e))
            _fail(f"refused, nothing was written: {e}", EXIT_SETTINGS)
        except restore.RestoreInterrupted as e:
            reason = f"{stopped_by[0]} received: {e}" if stopped_by else str(e)
            log.error("restore_failed", reason=reason)
            _fail(reason, EXIT_STOPPED)
        except restore.RestoreError as e:
            log.error("restore_failed", reason=str(e))
            _fail(str(e))
        except (identity.IdentityError, ClientAuthenticationError) as e:
            log.error("restore_failed", reason=identity.explain_auth_error(e))
            _fail(identity.explain_auth_error(e))
        except cosmos_exceptions.CosmosHttpResponseError as e:
            reason = restore.explain_restore_error(e, settings, "the target")
            log.error("restore_failed", reason=reason)
            _fail(reason)


@app.command()
def restore(
    container: str = typer.Option(..., "--container", "-c", help="Exported (source) container to restore"),
    target_container: Optional[str] = typer.Option(
        None, "--target-container", help="Existing container to write into; default from EXPORT_RESTORE_TARGETS"
    ),
    target_database: Optional[str] = typer.Option(
        None, "--target-database", help="Its database; default EXPORT_RESTORE_TARGET_DATABASE"
    ),
    sequence: Optional[int] = typer.Option(None, "--sequence", help="Committed sequence to restore (default: latest)"),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Restore the state as of this ISO 8601 time"),
    exact: bool = typer.Option(False, "--exact", help="Also delete target documents the state does not have"),
    max_ru_per_second: Optional[float] = typer.Option(
        None, "--max-ru-per-second", help="Request-unit budget; default EXPORT_MAX_RU_PER_SECOND"
    ),
    allow_source_target: bool = typer.Option(
        False, "--allow-source-target", help="Allow writing into an exported source container (never deletes)"
    ),
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    log_level: Optional[str] = _LOG,
) -> None:
    """Write a committed state into an existing container (upserts; --exact also deletes); resumable."""
    from cosmos_export.restore import RestoreRequest, run_restore

    if max_ru_per_second is not None and max_ru_per_second <= 0:
        _fail(f"--max-ru-per-second={max_ru_per_second}: must be positive", EXIT_SETTINGS)
    settings = _settings(identity_mode=identity_mode, bucket=bucket, prefix=prefix, log_level=log_level)
    request = RestoreRequest(
        container=container,
        target_container=target_container,
        target_database=target_database,
        sequence=sequence,
        as_of=_parse_time(as_of),
        exact=exact,
        max_ru_per_second=max_ru_per_second,
        allow_source_target=allow_source_target,
    )
    result, _ = _restore_session(settings, lambda **kw: run_restore(settings, request, **kw))
    typer.echo(
        f"{container} sequence {result.sequence} -> {result.target['database']}/{result.target['container']}: "
        f"{result.documents} document(s) ({result.documents_upserted} upserted by this run, resumed at "
        f"{result.resumed_from}), {result.deletes_applied} deleted, {result.request_charge} RU, "
        f"{result.seconds}s; progress s3://{settings.bucket}/{result.progress_key}"
    )


@app.command()
def drill(
    container: str = typer.Option(..., "--container", "-c", help="Exported container to drill"),
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    log_level: Optional[str] = _LOG,
) -> None:
    """Restore the latest state into the scratch container exactly, read it back, compare, write the report."""
    from cosmos_export.restore import run_drill

    settings = _settings(identity_mode=identity_mode, bucket=bucket, prefix=prefix, log_level=log_level)
    report = _restore_session(settings, lambda **kw: run_drill(settings, container, **kw))
    typer.echo(
        f"drill {container} sequence {report['sequence']} -> {report['target']['database']}/"
        f"{report['target']['container']}: {report['documents_found']}/{report['documents_expected']} "
        f"document(s) found, {report['documents_mismatched']} mismatched, definition "
        f"{'matches' if report['definition_matches'] else 'differs'}, {report['restore_seconds']}s to "
        f"restore; report s3://{settings.bucket}/{report['report_key']}"
    )
    if not report["ok"]:
        problems = report["definition_differences"] + [
            f"{report[k]} {k.removeprefix('documents_')}"
            for k in ("documents_missing", "documents_unexpected", "documents_differing")
            if report[k]
        ]
        _fail(f"drill of {container} failed: {'; '.join(problems) or 'document count differs'}")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="cosmos-export")


if __name__ == "__main__":
    main()
