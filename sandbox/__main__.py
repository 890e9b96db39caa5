"""`python -m sandbox up|down|status|env|seed|change|demo`: the local sandbox (see README.md ("The local sandbox"))."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from sandbox import serve as sb
from sandbox.breaks import BREAKS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run the export's whole chain of trust on 127.0.0.1, configured from a Pulumi stack.",
)

DirOption = typer.Option(sb.DEFAULT_DIR, "--dir", help="State directory (sandbox.json, CA, logs).")
StackOption = typer.Option("dev", "--stack", help="Stack whose Pulumi program configures the doubles.")
CosmosOption = typer.Option(
    "gateway",
    "--cosmos",
    help="gateway: the project's gateway double (change feed, RBAC); "
    "vercel: @vercel/cosmosdb-server (query snapshots only).",
)
AllVersionsOption = typer.Option(
    False,
    "--all-versions",
    help="The account has continuous backup (every version kept) and the stack runs "
    "changeFeedMode AllVersionsAndDeletes, so deletes are exported (gateway only).",
)

BreakOption = typer.Option(
    None,
    "--break",
    help="Start from the stack with one deliberate mistake, to see it fail as in the cloud: "
    + "; ".join(f"{name}: {b.what} ({b.expect})" for name, b in BREAKS.items()),
)

LatencyOption = typer.Option(
    0.0,
    "--latency-ms",
    min=0,
    max=10_000,
    help="Round-trip delay the gateway double adds to every Cosmos response (AWS to Azure: 5-30 ms).",
)


def _check_break(broken: str | None) -> None:
    if broken is not None and broken not in BREAKS:
        typer.echo(f"--break {broken!r} is not a modelled mistake: choose one of {', '.join(BREAKS)}", err=True)
        raise typer.Exit(2)


def _check_cosmos(cosmos: str, all_versions: bool = False) -> None:
    if cosmos not in ("gateway", "vercel"):
        typer.echo(f"--cosmos={cosmos!r} is not supported: use 'gateway' or 'vercel'", err=True)
        raise typer.Exit(2)
    if all_versions and cosmos != "gateway":
        typer.echo("--all-versions needs --cosmos gateway: @vercel/cosmosdb-server has no change feed", err=True)
        raise typer.Exit(2)


def _running(directory: Path) -> dict:
    state = sb.status(directory)
    if state is None:
        typer.echo(
            f"no sandbox is running from {directory}: run `{sb.command('python')} -m sandbox up` first", err=True
        )
        raise typer.Exit(1)
    return state


def how_to_use(state: dict, directory: Path) -> str:
    py, worker = sb.command("python"), sb.command("cosmos-export")
    broken = state.get("break")
    lines = [
        f"Sandbox for stack '{state['stack']}' is up (Cosmos: {state['cosmos']}"
        f"{', continuous backup: AllVersionsAndDeletes' if state.get('all_versions') else ''}). "
        f"State: {directory / sb.STATE_FILE}",
        *(
            [f"BROKEN ON PURPOSE (--break {broken}): {BREAKS[broken].what}; expect {BREAKS[broken].expect}."]
            if broken in BREAKS
            else []
        ),
        "",
        "  S3 (moto)     " + state["endpoints"]["s3"],
        "  STS double    " + state["endpoints"]["sts"],
        "  Entra double  " + state["endpoints"]["entra"],
        "  Cosmos        " + state["endpoints"]["cosmos"],
        "",
        "AWS CLI (a sandbox-only session of the task role; the values are in sandbox.json):",
        f'  eval "$({py} -m sandbox env --dir {directory} --aws)"',
        f"  aws --endpoint-url {state['endpoints']['s3']} s3 ls s3://{state['bucket']}/ --recursive",
        "",
        "The worker, with the stack's task-definition environment and the local endpoints:",
        f'  eval "$({py} -m sandbox env --dir {directory})"',
        f"  {worker} doctor && {worker} run --mode snapshot",
        *(
            [
                "",
                "The restore identity (its own role session and Entra app; writes only the restore targets):",
                f'  eval "$({py} -m sandbox env --dir {directory} --restore)"',
                f"  {worker} drill -c {state['containers'][0]}   # restores into "
                f"{state['restore_database']}/{state['restore_targets'].get(state['containers'][0])}, compares, reports",
            ]
            if state.get("restore_env")
            else []
        ),
        "",
        "Sample documents (the demo's): seed them, then change some and run the worker with --mode incremental:",
        f"  {py} -m sandbox seed --dir {directory} --docs 1000",
        f"  {py} -m sandbox change --dir {directory} --docs 1000",
        f"Stop: {py} -m sandbox down --dir {directory}",
    ]
    return "\n".join(lines)


@app.command()
def up(
    directory: Path = DirOption,
    stack: str = StackOption,
    cosmos: str = CosmosOption,
    all_versions: bool = AllVersionsOption,
    latency_ms: float = LatencyOption,
    broken: str | None = BreakOption,
) -> None:
    """Start the sandbox in the background and print how to use it."""
    _check_cosmos(cosmos, all_versions)
    _check_break(broken)
    if latency_ms and cosmos != "gateway":
        typer.echo("--latency-ms needs --cosmos gateway", err=True)
        raise typer.Exit(2)
    try:
        state = sb.up(directory, stack, cosmos, all_versions=all_versions, latency_ms=latency_ms, broken=broken)  # type: ignore[arg-type]
    except sb.SandboxError as exc:
        typer.echo(f"sandbox up failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(how_to_use(state, directory.resolve()))


@app.command()
def down(directory: Path = DirOption) -> None:
    """Stop the sandbox started by `up` (and every process it started)."""
    stopped = sb.down(directory)
    typer.echo(f"stopped {len(stopped)} process(es)" if stopped else "no sandbox was running")


@app.command()
def status(directory: Path = DirOption) -> None:
    """Print whether a sandbox is running, its endpoints, and where each container's export stands."""
    state = sb.status(directory)
    if state is None:
        typer.echo("no sandbox is running")
        raise typer.Exit(1)
    typer.echo(how_to_use(state, directory.resolve()))
    from sandbox.demo import status_table

    typer.echo("")
    typer.echo(status_table(state))


@app.command("env")
def env_cmd(
    directory: Path = DirOption,
    aws: bool = typer.Option(False, "--aws", help="Only what the AWS CLI needs."),
    restore: bool = typer.Option(
        False,
        "--restore",
        help="The restore identity's task environment "
        "(its own role session and Entra app) for `cosmos-export restore|drill`.",
    ),
) -> None:
    """Print `export` lines for the worker's environment (or the restore task's, or the AWS CLI's)."""
    state = _running(directory)
    if aws and restore:
        typer.echo("--aws and --restore are exclusive: choose one", err=True)
        raise typer.Exit(2)
    if restore and not state.get("restore_env"):
        typer.echo(
            f"stack {state['stack']!r} declares no restore identity: set restore.enabled in "
            f"stacks/Pulumi.{state['stack']}.yaml",
            err=True,
        )
        raise typer.Exit(1)
    values = state["aws_cli_env"] if aws else state["restore_env"] if restore else state["worker_env"]
    typer.echo("\n".join(f"export {k}={shlex.quote(v)}" for k, v in values.items()))


@app.command()
def seed(
    directory: Path = DirOption,
    docs: int = typer.Option(
        1000, "--docs", min=1, max=2_000_000, help="Sample documents for the first exported container."
    ),
) -> None:
    """Seed the running sandbox's containers with the demo's sample documents (upserts: rerunning is safe)."""
    from sandbox.demo import seed as seed_containers
    from sandbox.seed import SeedError

    try:
        counts = seed_containers(_running(directory), docs)
    except SeedError as exc:
        typer.echo(f"sandbox seed failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("seeded: " + ", ".join(f"{container}={n}" for container, n in counts.items()))


@app.command()
def change(
    directory: Path = DirOption,
    docs: int = typer.Option(1000, "--docs", min=1, help="The --docs given to `seed` (new ids start there)."),
) -> None:
    """Update, insert and delete sample documents of the first container, as the demo does between its runs."""
    from sandbox.demo import DELETED
    from sandbox.demo import change as change_documents
    from sandbox.seed import SeedError

    try:
        changed = change_documents(_running(directory), docs)
    except SeedError as exc:
        typer.echo(f"sandbox change failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("changed: " + ", ".join(f"{what}={n}" for what, n in changed.items()))
    if changed["deleted"] < DELETED:
        typer.echo(
            f"{DELETED - changed['deleted']} of the {DELETED} documents to delete were already gone "
            "(change ran before): the updates and inserts were applied again"
        )


@app.command("operator-run")
def operator_run(
    principal: str = typer.Option(..., "--principal", help="An IAM role ARN listed in the stack's `operators`."),
    output: str = typer.Option("runTaskCommand", "--output", help="The run command output to follow."),
    directory: Path = DirOption,
) -> None:
    """Assume the stack's operator role as PRINCIPAL, start the run its command shows, then run the task (moto)."""
    from sandbox.operator_run import main

    raise typer.Exit(main(_running(directory), principal, output, directory.resolve()))


@app.command("serve", hidden=True)
def serve_cmd(
    directory: Path = DirOption,
    stack: str = StackOption,
    cosmos: str = CosmosOption,
    all_versions: bool = AllVersionsOption,
    latency_ms: float = LatencyOption,
    broken: str | None = BreakOption,
) -> None:
    """Foreground server process (what `up` starts)."""
    _check_cosmos(cosmos, all_versions)
    _check_break(broken)
    raise typer.Exit(sb.serve(directory.resolve(), stack, cosmos, all_versions, latency_ms, broken))  # type: ignore[arg-type]


@app.command()
def demo(
    stack: str = StackOption,
    cosmos: str = CosmosOption,
    all_versions: bool = AllVersionsOption,
    docs: int = typer.Option(2000, "--docs", min=10, max=200_000, help="Documents to seed."),
    directory: Path = typer.Option(sb.DEFAULT_DIR / "demo", "--dir", help="State directory of the demo."),
    broken: str | None = BreakOption,
) -> None:
    """Up, seed, doctor, snapshot, change, incremental, verify, drill, summary, down."""
    from sandbox.demo import run_demo

    _check_cosmos(cosmos, all_versions)
    _check_break(broken)
    raise typer.Exit(
        run_demo(
            stack=stack,
            cosmos=cosmos,
            docs=docs,
            directory=directory.resolve(),
            all_versions=all_versions,
            broken=broken,
        )
    )


if __name__ == "__main__":
    sys.exit(app())
