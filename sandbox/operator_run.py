"""An operator's on-demand run in the sandbox, exactly as the stack's `runTaskCommand` output says (issue 18).

    .venv/bin/python -m sandbox operator-run --principal <role ARN listed in the stack's `operators`>

1. The operator role the command names is created in moto with the stack's exact name, path, trust
   policy, maximum session and inline policy (from the mocked Pulumi program, never typed here).
2. The principal's session (as IAM Identity Center would hand it out) assumes the operator role with the
   arguments of the command's `aws sts assume-role` step, and the command's `--query` / `printf` turn
   the answer into the three AWS_* variables, as the shell would.
3. The stack's cluster and task definition are declared in moto ECS; with the operator's credentials,
   `ecs:RunTask` gets the arguments of the command's `aws ecs run-task` line (parsed, not re-typed).
4. There is no container runtime here: moto records the task, and the sandbox runs the task's command
   (the task definition's, or the run-task override) with the task's environment, as the demo runs the
   worker. The worker runs as the task role, never with the operator's credentials.

The sandbox's moto enforces IAM (sandbox/iam.py), but it evaluates ECS calls against Resource "*" only:
the operator policy's scoping to the task family, the cluster and the passed roles would deny every
RunTask. The operator run therefore happens in moto's unchecked window, where AssumeRole checks no trust
policy either; the operator policy is checked under mocks (tests/infra, the policy pack), and the sandbox
checks the caller against the stack's trust statement itself (`trust_allows`, which knows only the two statement shapes
`policies.operator_trust_policy` writes and refuses anything else), before it calls AssumeRole.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import jmespath  # type: ignore[import-untyped]  # boto3's own query language, no stubs
from botocore.exceptions import ClientError

from sandbox import iam as sandbox_iam

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
CLUSTER = "aws:ecs/cluster:Cluster"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
#: What the run command's first line exports, in the order of its `--query`.
_PRINTF = re.compile(r"^export \$\(printf '([^']*)' \$\((aws sts assume-role .*)\)\)$")
_NETWORK = re.compile(
    r"^awsvpcConfiguration=\{subnets=\[([^\]]*)\],securityGroups=\[([^\]]*)\],assignPublicIp=(ENABLED|DISABLED)\}$"
)


class OperatorRunError(Exception):
    """The run cannot go ahead (not trusted, a command the sandbox does not recognise, a failed task)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the process
        raise OperatorRunError(f"{self.prog}: {message}")


def _parser(prog: str, options: dict[str, bool]) -> _Parser:
    parser = _Parser(prog=prog, add_help=False)
    for option, required in options.items():
        parser.add_argument(option, required=required)
    return parser


_ASSUME = _parser(
    "aws sts assume-role",
    {"--role-arn": True, "--role-session-name": True, "--duration-seconds": True, "--query": True, "--output": True},
)
_RUN_TASK = _parser(
    "aws ecs run-task",
    {
        "--region": True,
        "--cluster": True,
        "--launch-type": True,
        "--task-definition": True,
        "--network-configuration": True,
        "--overrides": False,
    },
)


@dataclass(frozen=True)
class RunCommand:
    """A run command output (`runTaskCommand`, `runRestoreCommand`, `runDrillCommand`), parsed."""

    #: The printf template of the first line (`AWS_ACCESS_KEY_ID=%s ...`).
    exports: str
    assume: argparse.Namespace
    run_task: argparse.Namespace

    @classmethod
    def parse(cls, text: str) -> "RunCommand":
        lines = text.strip().splitlines()
        if len(lines) != 2:
            raise OperatorRunError(
                f"a run command is two lines (the assume-role step, then aws ecs run-task); got {len(lines)}: {text!r}"
            )
        m = _PRINTF.match(lines[0])
        if m is None:
            raise OperatorRunError(f"the first line is not the operator's assume-role step: {lines[0]!r}")
        assume_argv, run_argv = shlex.split(m.group(2)), shlex.split(lines[1])
        if assume_argv[:3] != ["aws", "sts", "assume-role"] or run_argv[:3] != ["aws", "ecs", "run-task"]:
            raise OperatorRunError(f"unexpected commands: {assume_argv[:3]} then {run_argv[:3]}")
        return cls(m.group(1), _ASSUME.parse_args(assume_argv[3:]), _RUN_TASK.parse_args(run_argv[3:]))

    def credentials(self, assume_role_response: dict) -> dict[str, str]:
        """What `export $(printf ... $(aws sts assume-role ... --query ... --output text))` sets."""
        if self.assume.output != "text":
            raise OperatorRunError(f"--output {self.assume.output}: the printf step needs text")
        values = jmespath.search(self.assume.query, assume_role_response)
        words = (self.exports % tuple(values)).split()
        return dict(w.split("=", 1) for w in words)

    def run_task_kwargs(self) -> dict[str, Any]:
        """boto3 `ecs.run_task` arguments of the command's run-task line (the CLI's shorthand decoded)."""
        m = _NETWORK.match(self.run_task.network_configuration)
        if m is None:
            raise OperatorRunError(f"--network-configuration not understood: {self.run_task.network_configuration!r}")
        kwargs: dict[str, Any] = {
            "cluster": self.run_task.cluster,
            "launchType": self.run_task.launch_type,
            "taskDefinition": self.run_task.task_definition,
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": m.group(1).split(","),
                    "securityGroups": m.group(2).split(","),
                    "assignPublicIp": m.group(3),
                }
            },
        }
        if self.run_task.overrides is not None:
            kwargs["overrides"] = json.loads(self.run_task.overrides)
        return kwargs


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _account_root(arn: str) -> str:
    return f"arn:{arn.split(':')[1]}:iam::{arn.split(':')[4]}:root"


def trust_allows(trust: dict, principal_arn: str) -> bool:
    """Whether this trust policy lets the IAM role `principal_arn` call sts:AssumeRole.

    Only the shapes `policies.operator_trust_policy` writes: Allow statements naming role ARNs, or an account
    root with `ArnEquals aws:PrincipalArn` (any other element or condition raises: fail closed, never guess).
    """
    allowed = False
    for st in trust["Statement"]:
        unknown = set(st) - {"Sid", "Effect", "Principal", "Action", "Condition"}
        if st["Effect"] != "Allow" or unknown or set(st["Principal"]) != {"AWS"}:
            raise OperatorRunError(f"trust statement not understood by the sandbox: {st}")
        if "sts:AssumeRole" not in _as_list(st["Action"]):
            continue
        named = _as_list(st["Principal"]["AWS"])
        condition = st.get("Condition")
        if condition is None:
            allowed |= principal_arn in named
        elif set(condition) == {"ArnEquals"} and set(condition["ArnEquals"]) == {"aws:PrincipalArn"}:
            allowed |= _account_root(principal_arn) in named and principal_arn in _as_list(
                condition["ArnEquals"]["aws:PrincipalArn"]
            )
        else:
            raise OperatorRunError(f"trust condition not understood by the sandbox: {condition}")
    return allowed


def _client(service: str, moto_url: str, region: str, creds: dict[str, str]) -> Any:
    return boto3.client(  # type: ignore[call-overload]  # service is one of sts, iam, ecs, ec2
        service,
        endpoint_url=moto_url,
        region_name=region,
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
    )


def _session_of(moto_url: str, region: str, role_arn: str, name: str) -> dict[str, str]:
    """A session of `role_arn` straight from moto (moto checks no trust): the principal's own login."""
    sts = _client("sts", moto_url, region, {"AWS_ACCESS_KEY_ID": "sandbox-bootstrap", "AWS_SECRET_ACCESS_KEY": "x"})
    c = sts.assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": c["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
        "AWS_SESSION_TOKEN": c["SessionToken"],
    }


@dataclass
class OperatorRun:
    #: The stack output whose command this run followed.
    output: str
    command: RunCommand
    role_arn: str
    #: sts:GetCallerIdentity of the operator's credentials (the assumed-role session).
    caller_arn: str
    task_arn: str
    #: The task as moto recorded it (describe_tasks with the operator's credentials).
    task: dict
    argv: list[str] = field(default_factory=list)
    returncode: int | None = None
    stdout: str = ""


def _declare_operator_role(iam: Any, run: Any, role_arn: str) -> dict:
    """The stack's operator role in moto: exact name, path, trust, max session, inline policy. Its trust."""
    (role,) = [r for r in run.of_type(ROLE) if r.outputs["arn"] == role_arn] or [None]
    if role is None:
        raise OperatorRunError(f"the command assumes {role_arn}, which the stack does not declare")
    policies = [p for p in run.of_type(ROLE_POLICY) if p.inputs["role"] == role.outputs["id"]]
    i = role.inputs
    try:
        iam.create_role(
            Path=i["path"],
            RoleName=i["name"],
            AssumeRolePolicyDocument=i["assumeRolePolicy"],
            MaxSessionDuration=int(i["maxSessionDuration"]),  # Pulumi numbers arrive as floats
            Description=i["description"],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        iam.update_assume_role_policy(RoleName=i["name"], PolicyDocument=i["assumeRolePolicy"])
    for p in policies:  # moto's quirks translated (sandbox.iam.moto_policy), never the stack's policy changed
        policy = json.dumps(sandbox_iam.moto_policy(json.loads(p.inputs["policy"])))
        iam.put_role_policy(RoleName=i["name"], PolicyName=p.name, PolicyDocument=policy)
    created = iam.get_role(RoleName=i["name"])["Role"]["Arn"]
    if created != role_arn:
        raise OperatorRunError(f"moto created {created}, the command assumes {role_arn}")
    return json.loads(i["assumeRolePolicy"])


def _declare_task(ecs: Any, run: Any, kwargs: dict) -> None:
    """The cluster and the task definition family the command names, as the stack declares them."""
    clusters = [c for c in run.of_type(CLUSTER) if kwargs["cluster"] in (c.outputs["name"], c.outputs["arn"])]
    definitions = [d for d in run.of_type(TASK_DEFINITION) if d.outputs["arn"] == kwargs["taskDefinition"]]
    if len(clusters) != 1 or len(definitions) != 1:
        raise OperatorRunError(f"the stack declares no cluster {kwargs['cluster']} / task {kwargs['taskDefinition']}")
    ecs.create_cluster(clusterName=clusters[0].outputs["name"])
    d = definitions[0].inputs
    try:
        ecs.describe_task_definition(taskDefinition=kwargs["taskDefinition"])
        return  # declared by an earlier operator run in this moto
    except ClientError:
        pass
    containers = json.loads(d["containerDefinitions"])
    # moto's RunTask adds up container-level memory even for Fargate (TypeError without it): the task's own
    # memory as the container's reservation, the only change from what the stack declares.
    containers = [{"memoryReservation": int(d["memory"]), **c} for c in containers]
    registered = ecs.register_task_definition(
        family=d["family"],
        containerDefinitions=containers,
        taskRoleArn=d["taskRoleArn"],
        executionRoleArn=d["executionRoleArn"],
        networkMode=d["networkMode"],
        requiresCompatibilities=d["requiresCompatibilities"],
        cpu=str(d["cpu"]),
        memory=str(d["memory"]),
    )["taskDefinition"]["taskDefinitionArn"]
    if registered != kwargs["taskDefinition"]:
        raise OperatorRunError(f"moto registered {registered}, the command runs {kwargs['taskDefinition']}")


def _moto_network(ec2: Any, kwargs: dict) -> dict[str, str]:
    """moto ids standing for the command's subnets and security group (moto cannot create a chosen id)."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto's awsvpc ENI needs a DNS name
    network = kwargs["networkConfiguration"]["awsvpcConfiguration"]
    ids = {
        subnet: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
        for i, subnet in enumerate(network["subnets"])
    }
    for group in network["securityGroups"]:
        ids[group] = ec2.create_security_group(VpcId=vpc, GroupName=group, Description="stands for " + group)["GroupId"]
    return ids


def start_run(state: dict, run: Any, principal: str, *, output: str = "runTaskCommand") -> OperatorRun:
    """Become the operator role as `principal` and start the task, with the exact shape of `output`."""
    command = RunCommand.parse(run.outputs[output])
    moto_url, region = state["endpoints"]["s3"], command.run_task.region
    role_arn = command.assume.role_arn
    # The sandbox's moto enforces IAM, but it evaluates ECS calls against Resource "*" only, so the operator
    # policy's task-family, cluster and PassRole scoping would deny every RunTask there: the whole operator run
    # happens in the unchecked window (that policy is checked by tests/infra and the policy pack instead).
    # moto checks no trust policy in that window, so the sandbox checks the caller against the stack's trust.
    with sandbox_iam.enforcement_off(moto_url):
        # The deployer's side: the program's resources in the stack's account (moto keys accounts by session).
        admin = _session_of(moto_url, region, f"arn:aws:iam::{role_arn.split(':')[4]}:role/sandbox-deployer", "deploy")
        trust = _declare_operator_role(_client("iam", moto_url, region, admin), run, role_arn)
        if not trust_allows(trust, principal):
            raise OperatorRunError(
                f"{principal} may not assume {role_arn}: its trust names only the principals listed in the stack's "
                "`operators` (add it there with the actions it needs)"
            )
        signed_in = _session_of(moto_url, region, principal, os.environ.get("USER", "operator"))
        answer = _client("sts", moto_url, region, signed_in).assume_role(
            RoleArn=role_arn,
            RoleSessionName=os.environ.get("USER", "operator"),  # the command's "$(whoami)"
            DurationSeconds=int(command.assume.duration_seconds),
        )
        operator = command.credentials(answer)
        caller = _client("sts", moto_url, region, operator).get_caller_identity()["Arn"]
        kwargs = command.run_task_kwargs()
        _declare_task(_client("ecs", moto_url, region, admin), run, kwargs)
        ids = _moto_network(_client("ec2", moto_url, region, admin), kwargs)
        network = kwargs["networkConfiguration"]["awsvpcConfiguration"]
        moto_kwargs = {
            **kwargs,
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    **network,
                    "subnets": [ids[x] for x in network["subnets"]],
                    "securityGroups": [ids[x] for x in network["securityGroups"]],
                }
            },
        }
        ecs = _client("ecs", moto_url, region, operator)
        started = ecs.run_task(**moto_kwargs)
        if started.get("failures") or len(started["tasks"]) != 1:
            raise OperatorRunError(f"run-task started no task: {started.get('failures')}")
        task_arn = started["tasks"][0]["taskArn"]
        (task,) = ecs.describe_tasks(cluster=kwargs["cluster"], tasks=[task_arn])["tasks"]
    return OperatorRun(output, command, role_arn, caller, task_arn, task)


#: The sandbox identity (sandbox.json) whose task-role session each run command's task runs as.
IDENTITY_OF_OUTPUT = {
    "runTaskCommand": "worker_env",
    "runRestoreCommand": "restore_env",
    "runDrillCommand": "restore_env",
}


def execute(state: dict, started: OperatorRun, *, directory: Path | None = None) -> OperatorRun:
    """Run the recorded task's command with its environment, as ECS would: the container's, then the overrides."""
    ecs = _client("ecs", state["endpoints"]["s3"], started.command.run_task.region, state["aws_cli_env"])
    with sandbox_iam.enforcement_off(state["endpoints"]["s3"]):  # what ECS reads for the container, not a user call
        definition = ecs.describe_task_definition(taskDefinition=started.task["taskDefinitionArn"])["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    overrides = {o["name"]: o for o in started.task.get("overrides", {}).get("containerOverrides", [])}
    override = overrides.get(container["name"], {})
    argv_tail = override.get("command") or container["command"]
    task_env = {e["name"]: e["value"] for e in container.get("environment", [])}
    task_env.update({e["name"]: e["value"] for e in override.get("environment", [])})
    # The sandbox's local endpoints and the task role's session (what ECS hands the container), nothing else:
    # the operator's credentials never reach the task.
    sandbox_env = state[IDENTITY_OF_OUTPUT[started.output]]
    local = {k: v for k, v in sandbox_env.items() if task_env.get(k) != v}
    exe = Path(sys.executable).parent / "cosmos-export"
    started.argv = ([str(exe)] if exe.exists() else [sys.executable, "-m", "cosmos_export.cli"]) + list(argv_tail)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **task_env, **local}
    log = open(directory / "operator-run.log", "wb") if directory else subprocess.DEVNULL
    try:
        done = subprocess.run(started.argv, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    finally:
        if directory:
            log.close()  # type: ignore[union-attr]
    started.returncode, started.stdout = done.returncode, done.stdout.decode(errors="replace")
    return started


def main(state: dict, principal: str, output: str, directory: Path) -> int:
    """`python -m sandbox operator-run`: the run, then the task's command; prints what happened, returns its exit code."""
    from sandbox.mocked_stack import run_stack
    from sandbox.serve import ALL_VERSIONS

    run = run_stack(state["stack"], ALL_VERSIONS if state.get("all_versions") else None)
    try:
        started = start_run(state, run, principal, output=output)
    except OperatorRunError as exc:
        print(f"operator-run refused: {exc}", file=sys.stderr)
        return 1
    print(f"{principal}\n  assumed {started.role_arn}\n  as {started.caller_arn}")
    print(f"  ecs:RunTask -> {started.task_arn} ({started.task['taskDefinitionArn']})")
    done = execute(state, started, directory=directory)
    print(
        f"  ran `{' '.join(done.argv[1:])}` as the task role: exit {done.returncode} (log: {directory}/operator-run.log)"
    )
    print(done.stdout.rstrip())
    return done.returncode or 0
