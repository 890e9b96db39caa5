"""One process running the whole local cloud, configured from a stack's plan.

    python -m sandbox serve [--dir .sandbox] [--stack dev] [--cosmos gateway|vercel]

Starts on 127.0.0.1: moto server (a child process: S3 and the STS
credentials of the task role), the STS `GetWebIdentityToken` double, the Entra
double and a Cosmos endpoint (the project's gateway double, or
`@vercel/cosmosdb-server` as a child process for the query path only). Every
double is configured from `sandbox.plan.plan_from_stack`, never from values
typed here. When everything answers it writes `<dir>/sandbox.json` and serves
until SIGTERM/SIGINT, then stops everything it started.

`sandbox.json` (documented in README.md ("The local sandbox")) holds the endpoints, the
worker's environment (the task definition's, with local endpoint overrides and
the throwaway credentials of the assumed task role session) and the seeding
credential (the gateway double's control URL).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import boto3

from cosmos_export.contract import Env
from sandbox import iam
from sandbox.plan import SandboxPlan, plan_from_stack
from sandbox.seed import PARTITION_KEY_PATH
from sandbox.services import Service, start_cosmosdb_server, start_moto

CosmosKind = Literal["gateway", "vercel"]
STATE_FILE = "sandbox.json"
PID_FILE = "serve.pid"
FEED_RANGES = 4


@dataclass
class Running:
    """Everything started for one sandbox, and how to stop it."""

    plan: SandboxPlan
    cosmos_kind: CosmosKind
    ca: Any
    moto: Service
    sts: Any = None
    entra: Any = None
    cosmos: Any = None  # ServedDouble (gateway) or Service (vercel)
    sts_state: Any = None
    entra_state: Any = None
    cosmos_state: Any = None
    credentials: dict[str, str] = field(default_factory=dict)
    #: The restore task role's session (stacks with `restore.enabled`).
    restore_credentials: dict[str, str] = field(default_factory=dict)
    #: The account keeps every version (continuous backup): AllVersionsAndDeletes works.
    all_versions: bool = False
    #: Round-trip delay the gateway double adds to every data-plane response (`--latency-ms`).
    latency_ms: float = 0.0
    #: The `sandbox.breaks` mistake the plan was taken with (None: the stack as declared).
    broken: str | None = None
    stoppers: list = field(default_factory=list)

    @property
    def cosmos_url(self) -> str:
        return self.cosmos.url

    def stop(self) -> None:
        """Stop in reverse order; keep going if one fails so nothing is left behind."""
        errors = []
        while self.stoppers:
            stop = self.stoppers.pop()
            try:
                stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _assume_task_role(moto_url: str, plan: SandboxPlan, *, restore: bool = False) -> dict[str, str]:
    """The (restore) task role's temporary credentials, as ECS would hand them to the container."""
    sts = boto3.client(
        "sts",
        endpoint_url=moto_url,
        region_name=plan.region,
        aws_access_key_id="sandbox-bootstrap",
        aws_secret_access_key="sandbox-bootstrap",
    )
    role_arn, seconds = plan.task_role_arn, plan.task_role_max_session_seconds
    if restore:
        assert plan.restore is not None
        role_arn, seconds = plan.restore.task_role_arn, plan.restore.task_role_max_session_seconds
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=_session_name(restore), DurationSeconds=seconds)[
        "Credentials"
    ]
    return {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }


def _session_name(restore: bool) -> str:
    return "ecs-restore-task-sandbox" if restore else "ecs-task-sandbox"


def _create_bucket(moto_url: str, plan: SandboxPlan, credentials: dict[str, str]) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=plan.region,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
    )
    kwargs: dict[str, Any] = {"Bucket": plan.bucket}
    if plan.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": plan.region}
    s3.create_bucket(**kwargs)
    # As declared by the program: versioned (the worker records version ids).
    s3.put_bucket_versioning(Bucket=plan.bucket, VersioningConfiguration={"Status": "Enabled"})


def start_identity(plan: SandboxPlan, ca: Any, credentials: dict[str, str], running: Running) -> None:
    """STS and Entra doubles, configured from the plan."""
    from sandbox.doubles.entra import EntraDoubleState, serve_entra
    from sandbox.doubles.sts import StsDoubleState, serve_sts

    policy = plan.token_policy
    running.sts_state = StsDoubleState(
        plan.issuer,
        allowed_audiences=policy.audiences,
        max_duration_seconds=policy.max_duration_seconds,
        allowed_signing_algorithms=policy.signing_algorithms,
        region=plan.region,
    )
    running.sts_state.register_credentials(
        credentials["AWS_ACCESS_KEY_ID"],
        plan.task_role_arn,
        session_name="ecs-task-sandbox",
        session_token=credentials["AWS_SESSION_TOKEN"],
        session_expires_at=datetime.now(timezone.utc) + timedelta(seconds=plan.task_role_max_session_seconds),
    )
    if plan.restore is not None and running.restore_credentials:
        # The restore task's own session: its token's subject is the restore role, which only the restore FIC trusts.
        running.sts_state.register_credentials(
            running.restore_credentials["AWS_ACCESS_KEY_ID"],
            plan.restore.task_role_arn,
            session_name=_session_name(True),
            session_token=running.restore_credentials["AWS_SESSION_TOKEN"],
            session_expires_at=datetime.now(timezone.utc)
            + timedelta(seconds=plan.restore.task_role_max_session_seconds),
        )
    running.sts = serve_sts(running.sts_state, ca).start()
    running.stoppers.append(running.sts.stop)

    entra = running.entra_state = EntraDoubleState(plan.tenant_id)
    # Entra trusts the account issuer through its JWKS (in the cloud: fetched from the issuer URL).
    entra.trust_issuer(plan.issuer, running.sts_state.jwks())
    for app in plan.applications:
        entra.add_application(app.client_id, app.service_principal_object_id)
    for fic in plan.federated_credentials:
        entra.add_federated_credential(fic.client_id, fic.issuer, fic.subject, list(fic.audiences))
    running.entra = serve_entra(entra, ca).start()
    running.stoppers.append(running.entra.stop)


def start_cosmos(
    plan: SandboxPlan, ca: Any, kind: CosmosKind, running: Running, log_dir: Path | None, *, auth: bool = True
) -> None:
    if kind == "vercel":
        from sandbox.seed import SdkSeeder

        running.cosmos = start_cosmosdb_server(log_dir=log_dir)
        running.stoppers.append(running.cosmos.stop)
        seeder = SdkSeeder(running.cosmos.url)
        for container in plan.cosmos_containers:
            seeder.create_container(plan.cosmos_database, container)
        for target in restore_targets(plan):
            seeder.create_container(target.database, target.container, partition_key_path=target.partition_key_paths[0])
        return
    from sandbox.doubles.cosmos.gateway import CosmosGatewayState, RoleAssignment, serve_cosmos

    verifier = running.entra_state.verify_access_token if (auth and running.entra_state is not None) else None
    state = running.cosmos_state = CosmosGatewayState(
        plan.cosmos_account,
        token_verifier=verifier,
        role_assignments=[RoleAssignment(a.principal_id, a.scope, a.data_actions) for a in plan.cosmos_assignments],
        record_all_versions=running.all_versions,
    )
    state.latency_seconds = running.latency_ms / 1000
    from sandbox.mocked_stack import DEFAULT_DEFINITION, SOURCE_DEFINITIONS

    for container in plan.cosmos_containers:
        # The sources as the mocked account reports them to the program (definitions the targets copy).
        created = state.create_container(plan.cosmos_database, container, PARTITION_KEY_PATH, FEED_RANGES)
        created.properties.update(SOURCE_DEFINITIONS.get(container, DEFAULT_DEFINITION))
    # The targets as the program declares them (the worker never creates a container).
    for target in restore_targets(plan):
        created = state.create_container(target.database, target.container, target.partition_key_paths[0], FEED_RANGES)
        created.properties.update(target.properties)
    running.cosmos = serve_cosmos(state, ca).start()
    running.stoppers.append(running.cosmos.stop)


def restore_targets(plan: SandboxPlan) -> list:
    """The declared restore targets; the local Cosmos endpoints take one partition key path per container."""
    targets = list(plan.restore.targets) if plan.restore else []
    for t in targets:
        if len(t.partition_key_paths) != 1:
            raise SandboxError(
                f"restore target {t.database}/{t.container} has the {t.partition_key_kind} partition "
                f"key {list(t.partition_key_paths)}: the sandbox's Cosmos endpoints serve single-path "
                "keys only; use a stack whose exported containers have one"
            )
    return targets


def worker_environment(running: Running, *, restore: bool = False) -> dict[str, str]:
    """The (restore) task definition's environment with the local endpoints and the sandbox-only session."""
    plan, ca = running.plan, running.ca
    if restore and plan.restore is None:
        raise SandboxError(f"stack {plan.stack!r} has no restore block (Pulumi config restore.enabled)")
    env = dict(plan.restore.worker_environment if restore and plan.restore else plan.worker_environment)
    env.update(
        {
            Env.S3_ENDPOINT: running.moto.url,
            Env.STS_ENDPOINT: running.sts.url,
            Env.AZURE_AUTHORITY_HOST: running.entra.url,
            Env.COSMOS_ENDPOINT: running.cosmos_url + "/",
            # The endpoint is an IP address: the account name for S3 keys comes from the plan.
            Env.COSMOS_ACCOUNT: plan.cosmos_account,
            # azure-identity/requests and botocore each read their own variable.
            "REQUESTS_CA_BUNDLE": str(ca.bundle_file),
            "AWS_CA_BUNDLE": str(ca.bundle_file),
            "AWS_DEFAULT_REGION": plan.region,
            **(running.restore_credentials if restore else running.credentials),
        }
    )
    if running.cosmos_kind == "vercel":
        # Its bundled certificate expired in 2021 and it has no change feed: query snapshots only.
        env[Env.COSMOS_TLS_VERIFY] = "false"
        env[Env.SNAPSHOT_SOURCE] = "query"
    else:
        env[Env.COSMOS_TLS_VERIFY] = str(ca.bundle_file)
    return env


def bootstrap(moto_url: str, plan: SandboxPlan, running: Running, *, create_bucket: Any = None) -> None:
    """The declared task roles in moto, their sessions (as ECS would mint them) and the bucket; then IAM enforced.

    AssumeRole happens before enforcement is on: moto would check it against the trust policy, which
    trusts ecs-tasks.amazonaws.com, not a local caller (sandbox/iam.py says what is enforced).
    """

    def sessions_and_bucket() -> None:
        running.credentials = _assume_task_role(moto_url, plan)
        if plan.restore is not None:
            running.restore_credentials = _assume_task_role(moto_url, plan, restore=True)
        (create_bucket or _create_bucket)(moto_url, plan, running.credentials)

    iam.provision(moto_url, plan, sessions_and_bucket)


#: The stack override that `--all-versions` applies: the program then declares the AllVersionsAndDeletes task.
ALL_VERSIONS = {"changeFeedMode": "AllVersionsAndDeletes"}


def start_all(
    directory: Path,
    stack: str = "dev",
    cosmos: CosmosKind = "gateway",
    *,
    plan: SandboxPlan | None = None,
    auth: bool = True,
    all_versions: bool = False,
    latency_ms: float = 0.0,
    broken: str | None = None,
) -> Running:
    """Start everything for `plan` (default: the stack's); on any failure stop what already started.

    `all_versions`: the account has continuous backup (the double keeps every version) and the stack runs
    with changeFeedMode AllVersionsAndDeletes, so deletes are exported.
    """
    from sandbox.doubles.tls import create_local_ca

    if all_versions and cosmos == "vercel":
        raise SandboxError("--all-versions needs the gateway double: @vercel/cosmosdb-server has no change feed")
    directory.mkdir(parents=True, exist_ok=True)
    plan = plan or plan_from_stack(stack, ALL_VERSIONS if all_versions else None, broken)
    ca = create_local_ca(directory / "ca")
    moto = start_moto(log_dir=directory)
    running = Running(
        plan=plan, cosmos_kind=cosmos, ca=ca, moto=moto, all_versions=all_versions, latency_ms=latency_ms, broken=broken
    )
    running.stoppers.append(moto.stop)
    try:
        bootstrap(moto.url, plan, running)
        start_identity(plan, ca, running.credentials, running)
        start_cosmos(plan, ca, cosmos, running, directory, auth=auth)
    except BaseException:
        running.stop()
        raise
    return running


def describe(running: Running) -> dict[str, Any]:
    plan = running.plan
    control = f"{running.cosmos_url}/_double" if running.cosmos_kind == "gateway" else None
    return {
        "format": 1,
        "pid": os.getpid(),
        "pids": {
            "serve": os.getpid(),
            "moto": running.moto.process.pid,
            **({"cosmosdb-server": running.cosmos.process.pid} if running.cosmos_kind == "vercel" else {}),
        },
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stack": plan.stack,
        "break": running.broken,
        "cosmos": running.cosmos_kind,
        "all_versions": running.all_versions,
        "latency_ms": running.latency_ms,
        "endpoints": {
            "s3": running.moto.url,
            "sts": running.sts.url,
            "entra": running.entra.url,
            "cosmos": running.cosmos_url,
        },
        "ca_bundle": str(running.ca.bundle_file),
        "bucket": plan.bucket,
        "prefix": plan.prefix,
        "region": plan.region,
        "cosmos_account": plan.cosmos_account,
        "database": plan.cosmos_database,
        "containers": list(plan.cosmos_containers),
        "partition_key_path": PARTITION_KEY_PATH,
        # Throwaway values of this sandbox only (moto session, local doubles); never real secrets.
        "worker_env": worker_environment(running),
        # The restore identity's task environment (its own session and client id): `env --restore`.
        "restore_env": worker_environment(running, restore=True) if plan.restore else None,
        "restore_targets": {
            s: t
            for s, _, t in (
                p.partition("=")
                for p in (plan.restore.worker_environment[Env.RESTORE_TARGETS].split(",") if plan.restore else [])
            )
        },
        "restore_database": plan.restore.worker_environment[Env.RESTORE_TARGET_DATABASE] if plan.restore else None,
        "seed": {
            "control_url": control,
            "kind": "gateway-control" if control else "cosmos-sdk-any-key",
            "cosmos_endpoint": running.cosmos_url,
        },
        "aws_cli_env": {k: v for k, v in running.credentials.items()} | {"AWS_DEFAULT_REGION": plan.region},
    }


def write_state(directory: Path, data: dict[str, Any]) -> Path:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)  # readers never see half a file
    return path


def serve(
    directory: Path,
    stack: str = "dev",
    cosmos: CosmosKind = "gateway",
    all_versions: bool = False,
    latency_ms: float = 0.0,
    broken: str | None = None,
) -> int:
    """Foreground: start, write sandbox.json, serve until SIGTERM/SIGINT, stop everything."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PID_FILE).write_text(f"{os.getpid()}\n")
    state_path = directory / STATE_FILE
    state_path.unlink(missing_ok=True)
    running = None
    try:
        running = start_all(directory, stack, cosmos, all_versions=all_versions, latency_ms=latency_ms, broken=broken)
        write_state(directory, describe(running))
        print(f"sandbox ready: {state_path}", flush=True)
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        state_path.unlink(missing_ok=True)
        if running is not None:
            running.stop()
        (directory / PID_FILE).unlink(missing_ok=True)
        print("sandbox stopped", flush=True)


# --- Detached control: up / down / status --------------------------------------------------------

DEFAULT_DIR = Path(".sandbox")


class SandboxError(RuntimeError):
    pass


def command(tool: str) -> str:
    """How to call `tool` (python, cosmos-export) of this interpreter's environment from the current directory.

    `.venv/bin/python` from the repository root, as README.md writes every command: it works in a fresh
    shell, with or without the virtualenv activated. sys.executable is not resolved (the venv's python is
    a symlink to the base interpreter, whose bin/ has no cosmos-export).
    """
    bin_dir = Path(sys.executable).parent
    try:
        return f"{bin_dir.relative_to(Path.cwd())}/{tool}"
    except ValueError:
        return str(bin_dir / tool)


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; it is not serving anything.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _serve_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    # Only ever signal our own serve process, never a recycled pid.
    return pid if _alive(pid) and "sandbox" in _cmdline(pid) and "serve" in _cmdline(pid) else None


def up(
    directory: Path,
    stack: str = "dev",
    cosmos: CosmosKind = "gateway",
    timeout: float = 120.0,
    all_versions: bool = False,
    latency_ms: float = 0.0,
    broken: str | None = None,
) -> dict:
    """Start `python -m sandbox serve` detached (own session) and wait until sandbox.json is written."""
    import subprocess

    directory = directory.resolve()
    if _serve_pid(directory) is not None:
        raise SandboxError(
            f"a sandbox is already running from {directory} (pid {_serve_pid(directory)}): "
            f"run `{command('python')} -m sandbox down --dir {directory}` first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    log = open(directory / "serve.log", "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--dir",
            str(directory),
            "--stack",
            stack,
            "--cosmos",
            cosmos,
            *(["--all-versions"] if all_versions else []),
            *(["--latency-ms", str(latency_ms)] if latency_ms else []),
            *(["--break", broken] if broken else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state and state.get("pid") == process.pid:
            return state
        if process.poll() is not None:
            tail = (directory / "serve.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise SandboxError(
                f"the sandbox exited with code {process.returncode} while starting:\n  " + "\n  ".join(tail)
            )
        time.sleep(0.2)
    down(directory)
    raise SandboxError(f"the sandbox did not become ready within {timeout:.0f}s; see {directory / 'serve.log'}")


def down(directory: Path, timeout: float = 20.0) -> list[int]:
    """Stop the serve process (it stops its children); kill leftovers it could not stop. Returns pids stopped."""
    directory = directory.resolve()
    state = read_state(directory) or {}
    stopped = []
    pid = _serve_pid(directory)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(pid)
    # If serve itself was killed (-9), its children (own sessions) may remain: stop them by their recorded pid.
    for name, child in (state.get("pids") or {}).items():
        if name != "serve" and _alive(child) and ("moto" in _cmdline(child) or "cosmosdb" in _cmdline(child)):
            os.killpg(child, signal.SIGTERM)
            stopped.append(child)
    (directory / STATE_FILE).unlink(missing_ok=True)
    (directory / PID_FILE).unlink(missing_ok=True)
    return stopped


def status(directory: Path) -> dict | None:
    directory = directory.resolve()
    state = read_state(directory)
    if state is None or _serve_pid(directory) != state.get("pid"):
        return None
    return state
