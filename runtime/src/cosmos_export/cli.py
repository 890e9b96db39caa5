"""`cosmos-export run|doctor|verify|status`: settings from the environment, flags on top.

Exit codes: 0 ok, 1 export/verify/doctor failure (status: a container older than --max-age or never
committed), 2 invalid settings or usage,
143 stopped by SIGTERM (ECS stop) before commit. On failure the last line on
stderr is the reason.
"""

from __future__ import annotations

import signal
import sys
import threading
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
    mode: Mode = typer.Option(
        ..., "--mode", help="snapshot (everything) or incremental (changes since the checkpoint)"
    ),
    identity_mode: Optional[IdentityMode] = _IDENTITY,
    containers: Optional[list[str]] = _CONTAINER,
    bucket: Optional[str] = _BUCKET,
    prefix: Optional[str] = _PREFIX,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Feed ranges read in parallel"),
    snapshot_source: Optional[str] = typer.Option(None, "--snapshot-source", help="changefeed or query"),
    query_filter: Optional[str] = typer.Option(None, "--where", help="WHERE condition for a query snapshot"),
    log_level: Optional[str] = _LOG,
) -> None:
    """Export the configured containers and commit the run (manifest, then checkpoint)."""
    from cosmos_export.export import ExportError, ExportInterrupted, run_export

    settings = _settings(
        identity_mode=identity_mode,
        cosmos_containers=containers,
        bucket=bucket,
        prefix=prefix,
        concurrency=concurrency,
        snapshot_source=snapshot_source,
        query_filter=query_filter,
        log_level=log_level,
    )
    audit.configure_logging(settings.log_level)
    log = audit.get_logger()
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Stop reading new pages; the run aborts its uploads and commits nothing (ECS gives 30 s by default).
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_export(settings, mode.value, stop=stop, log=log)
    except ExportInterrupted as e:
        reason = f"{stopped_by[0]} received: {e}" if stopped_by else str(e)
        log.error("export_failed", reason=reason)
        _fail(reason, EXIT_STOPPED)
    except ExportError as e:
        log.error("export_failed", reason=str(e))
        _fail(str(e))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    typer.echo("all checks passed")


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


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="cosmos-export")


if __name__ == "__main__":
    main()
