"""What the local doubles must enforce, taken from what the Pulumi program declares.

`plan_from_stack("dev")` runs the real program for a stack under mocks
(`sandbox.mocked_stack.run_stack`) and extracts, from the registered resources
rather than from hand-typed values: the federated credentials (issuer, subject,
audiences) and the application/service principal they hang on, the tenant, the
Cosmos role assignments with their role's data actions and scopes, the task
role's `sts:GetWebIdentityToken` conditions, the bucket/prefix/KMS key, and the
worker's environment from the ECS task definition. The doubles are configured
from this plan, so a mistake in the infrastructure code (a wrong FIC subject, a
missing data action, a policy that forbids RS256) makes the sandbox fail the way
the cloud would: same AADSTS code, same 403.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cosmos_export import contract
from cosmos_export.contract import Env

APP = "azuread:index/application:Application"
SERVICE_PRINCIPAL = "azuread:index/servicePrincipal:ServicePrincipal"
FIC = "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
ROLE = "aws:iam/role:Role"
WEB_IDENTITY_ACTION = "sts:GetWebIdentityToken"


class PlanError(ValueError):
    """The declared infrastructure cannot work (the cloud would refuse it at deploy or at run time)."""


@dataclass(frozen=True)
class FederatedCredential:
    client_id: str  # of the application it belongs to
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class Application:
    client_id: str
    service_principal_object_id: str


@dataclass(frozen=True)
class CosmosAssignment:
    principal_id: str
    scope: str  # relative to the account: "/", "/dbs/<db>" or "/dbs/<db>/colls/<c>"
    data_actions: tuple[str, ...]


@dataclass(frozen=True)
class TokenPolicy:
    """The task role policy's conditions on sts:GetWebIdentityToken (what IAM would evaluate)."""

    audiences: tuple[str, ...]
    max_duration_seconds: int
    signing_algorithms: tuple[str, ...]


@dataclass(frozen=True)
class DeclaredRole:
    """An IAM role as the program declares it: what the sandbox creates in moto (sandbox/iam.py)."""

    arn: str
    name: str
    path: str
    trust_policy: str  # JSON, as declared
    max_session_seconds: int
    #: (logical name, policy JSON) of every inline policy (aws.iam.RolePolicy) attached to it.
    inline_policies: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RestoreTarget:
    """A restore target container as the program declares it (azure-native SqlResourceSqlContainer)."""

    database: str
    container: str
    partition_key_paths: tuple[str, ...]
    partition_key_kind: str
    #: The rest of the declared definition, by ARM name: indexingPolicy, defaultTtl, uniqueKeyPolicy.
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestorePlan:
    """The restore identity and its targets (a stack with `restore.enabled`)."""

    task_role_arn: str
    task_role_max_session_seconds: int
    token_policy: TokenPolicy
    targets: tuple[RestoreTarget, ...]
    #: The restore task definition's environment.
    worker_environment: dict[str, str] = field(default_factory=dict)

    @property
    def client_id(self) -> str:
        return self.worker_environment[Env.AZURE_CLIENT_ID]


@dataclass(frozen=True)
class SandboxPlan:
    stack: str
    region: str
    account_id: str
    issuer: str  # the account's outbound federation issuer (what STS signs with)
    task_role_arn: str
    task_role_max_session_seconds: int
    token_policy: TokenPolicy
    tenant_id: str
    applications: tuple[Application, ...]
    federated_credentials: tuple[FederatedCredential, ...]
    cosmos_account: str
    cosmos_database: str
    cosmos_containers: tuple[str, ...]  # the exported ones
    cosmos_assignments: tuple[CosmosAssignment, ...]
    bucket: str
    prefix: str
    kms_key_arn: str
    worker_environment: dict[str, str] = field(default_factory=dict)
    restore: RestorePlan | None = None
    #: The task role (and the restore task role), with their trust and inline policies.
    roles: tuple[DeclaredRole, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def client_id(self) -> str:
        """The application the worker signs in as (from the task definition's environment)."""
        return self.worker_environment[Env.AZURE_CLIENT_ID]


def _account_name_from_scope(scope: str) -> str:
    marker = "/databaseAccounts/"
    if marker not in scope:
        raise PlanError(f"Cosmos role assignment scope {scope!r} is not under a databaseAccounts resource id")
    return scope.split(marker, 1)[1].split("/", 1)[0]


def _token_policy(policy: dict) -> TokenPolicy:
    """Condition values of the statement allowing sts:GetWebIdentityToken (absent = not allowed at all)."""
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Allow" or WEB_IDENTITY_ACTION not in actions:
            continue
        condition = statement.get("Condition", {})

        def values(operator: str, key: str) -> list:
            value = condition.get(operator, {}).get(key)  # noqa: B023  # called in this iteration only
            if value is None:
                return []
            return value if isinstance(value, list) else [value]

        audiences = values("ForAllValues:StringEquals", "sts:IdentityTokenAudience")
        durations = values("NumericLessThanEquals", "sts:DurationSeconds")
        algorithms = values("StringEquals", "sts:SigningAlgorithm")
        return TokenPolicy(
            # An unconditioned key allows every value, as in IAM.
            audiences=tuple(audiences) or ("*",),
            max_duration_seconds=int(durations[0]) if durations else contract.WEB_IDENTITY_TOKEN_MAX_SECONDS,
            signing_algorithms=tuple(algorithms) or ("RS256", "ES384"),
        )
    # No statement: STS answers AccessDenied for any audience. An empty audience list does exactly that.
    return TokenPolicy(
        audiences=(), max_duration_seconds=contract.WEB_IDENTITY_TOKEN_MAX_SECONDS, signing_algorithms=("RS256",)
    )


def _declared_role(run: Any, role: Any) -> DeclaredRole:
    return DeclaredRole(
        arn=role.outputs["arn"],
        name=role.outputs.get("name") or role.inputs["name"],
        path=role.inputs.get("path", "/"),
        trust_policy=role.inputs["assumeRolePolicy"],
        max_session_seconds=int(role.inputs.get("maxSessionDuration", 3600)),
        inline_policies=tuple(
            (r.name, r.inputs["policy"])
            for r in run.of_type("aws:iam/rolePolicy:RolePolicy")
            if r.inputs.get("role") in (role.outputs["id"], role.outputs.get("name"))
        ),
    )


def _inline_policy(run: Any, role: Any) -> dict:
    """The role's inline policy (parsed); an empty policy when it has none."""
    docs = [
        json.loads(r.inputs["policy"])
        for r in run.of_type("aws:iam/rolePolicy:RolePolicy")
        if r.inputs.get("role") in (role.outputs["id"], role.outputs.get("name"))
    ]
    return {"Statement": [s for d in docs for s in d.get("Statement", [])]}


def plan_from_run(run: Any) -> SandboxPlan:
    """Extract the plan from a `sandbox.mocked_stack.StackRun` (possibly altered by a test)."""
    apps_by_id = {r.outputs["id"]: r for r in run.of_type(APP)}
    sps_by_client = {r.inputs["clientId"]: r for r in run.of_type(SERVICE_PRINCIPAL)}
    applications = []
    for app in apps_by_id.values():
        client_id = app.outputs["clientId"]
        sp = sps_by_client.get(client_id)
        if sp is None:
            raise PlanError(
                f"application {app.name} (client id {client_id}) has no service principal: "
                "Entra cannot issue tokens for it; declare an azuread.ServicePrincipal with its client_id"
            )
        applications.append(Application(client_id, sp.outputs["objectId"]))

    credentials = []
    for r in run.of_type(FIC):
        app = apps_by_id.get(r.inputs["applicationId"])
        if app is None:
            # What Graph answers when application_id is the client id instead of the resource id.
            raise PlanError(
                f"federated credential {r.name}: application_id={r.inputs['applicationId']!r} is not "
                "the id of any declared application; pass app.id (not app.client_id)"
            )
        credentials.append(
            FederatedCredential(
                app.outputs["clientId"],
                r.inputs.get("displayName", r.name),
                r.inputs["issuer"],
                r.inputs["subject"],
                tuple(r.inputs["audiences"]),
            )
        )

    assignments = tuple(
        CosmosAssignment(a["principal_id"], a["relative_scope"], tuple(a["data_actions"]))
        for a in run.cosmos_role_assignments()
    )
    env = run.task_definition_environment()
    missing = [
        name
        for name in (Env.COSMOS_DATABASE, Env.COSMOS_CONTAINERS, Env.AZURE_CLIENT_ID, Env.AZURE_TENANT_ID, Env.BUCKET)
        if not env.get(name)
    ]
    if missing:
        raise PlanError(f"the task definition's environment lacks {', '.join(missing)}: the worker cannot start")

    roles = [r for r in run.of_type(ROLE) if r.outputs["arn"] == run.task_role_arn]
    if len(roles) != 1:
        raise PlanError(
            f"stack output {contract.Output.TASK_ROLE_ARN}={run.task_role_arn!r} matches "
            f"{len(roles)} declared IAM roles; it must be the task role's ARN"
        )
    task_role = roles[0]
    restore = _restore_plan(run)
    token_policy = _token_policy(_inline_policy(run, task_role))
    if restore is not None and restore.token_policy != token_policy:
        raise PlanError(
            f"the restore task role's sts:GetWebIdentityToken conditions {restore.token_policy} differ "
            f"from the export task role's {token_policy}; the sandbox's STS double enforces one set"
        )
    account_names = {
        _account_name_from_scope(r.inputs["scope"])
        for r in run.of_type("azure-native:cosmosdb:SqlResourceSqlRoleAssignment")
    }
    config_account = run.config.get("cosmos-s3-export:cosmosAccountName", "")
    return SandboxPlan(
        stack=run.stack,
        region=run.config.get("aws:region", "eu-west-1"),
        account_id=task_role.outputs["arn"].split(":")[4],
        issuer=run.issuer,
        task_role_arn=task_role.outputs["arn"],
        task_role_max_session_seconds=int(task_role.inputs.get("maxSessionDuration", 3600)),
        token_policy=token_policy,
        tenant_id=run.tenant_id,
        applications=tuple(applications),
        federated_credentials=tuple(credentials),
        cosmos_account=(account_names.pop() if len(account_names) == 1 else config_account),
        cosmos_database=env[Env.COSMOS_DATABASE],
        cosmos_containers=tuple(c.strip() for c in env[Env.COSMOS_CONTAINERS].split(",") if c.strip()),
        cosmos_assignments=assignments,
        bucket=env[Env.BUCKET],
        prefix=env.get(Env.PREFIX, "cosmos"),
        kms_key_arn=env.get(Env.KMS_KEY_ARN) or run.kms_key_arn,
        worker_environment=env,
        restore=restore,
        roles=tuple(
            _declared_role(run, r)
            for r in run.of_type(ROLE)
            if r.outputs["arn"] in (task_role.outputs["arn"], restore.task_role_arn if restore else None)
        ),
    )


CONTAINER = "azure-native:cosmosdb:SqlResourceSqlContainer"


def _integral(value: Any) -> Any:
    """Numbers came back from the engine as floats (protobuf); Cosmos reports defaultTtl as an integer."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _restore_plan(run: Any) -> RestorePlan | None:
    """The restore role, its token policy, its task's environment and the declared target containers."""
    arn = run.outputs.get(contract.Output.RESTORE_TASK_ROLE_ARN)
    if arn is None:
        return None
    roles = [r for r in run.of_type(ROLE) if r.outputs["arn"] == arn]
    if len(roles) != 1:
        raise PlanError(
            f"stack output {contract.Output.RESTORE_TASK_ROLE_ARN}={arn!r} matches {len(roles)} "
            "declared IAM roles; it must be the restore task role's ARN"
        )
    targets = []
    for r in run.of_type(CONTAINER):
        key = r.inputs["resource"].get("partitionKey") or {}
        properties = {k: v for k, v in r.inputs["resource"].items() if k not in ("id", "partitionKey")}
        targets.append(
            RestoreTarget(
                r.inputs["databaseName"],
                r.inputs["containerName"],
                tuple(key.get("paths") or ()),
                key.get("kind", "Hash"),
                _integral(properties),
            )
        )
    env = run.task_definition_environment("-restore")
    missing = [
        name for name in (Env.AZURE_CLIENT_ID, Env.RESTORE_TARGET_DATABASE, Env.RESTORE_TARGETS) if not env.get(name)
    ]
    if missing:
        raise PlanError(f"the restore task definition's environment lacks {', '.join(missing)}: `drill` cannot start")
    return RestorePlan(
        task_role_arn=arn,
        task_role_max_session_seconds=int(roles[0].inputs.get("maxSessionDuration", 3600)),
        token_policy=_token_policy(_inline_policy(run, roles[0])),
        targets=tuple(targets),
        worker_environment=env,
    )


def plan_from_stack(
    stack: str = "dev", overrides: dict[str, Any] | None = None, broken: str | None = None
) -> SandboxPlan:
    """Run the Pulumi program of `stack` under mocks and extract the plan (with a `sandbox.breaks` mistake)."""
    from sandbox import breaks
    from sandbox.mocked_stack import run_stack, stack_names

    if stack not in stack_names():
        raise PlanError(f"stack {stack!r} has no stacks/Pulumi.{stack}.yaml; choose one of {', '.join(stack_names())}")
    return plan_from_run(breaks.apply(run_stack(stack, overrides), broken))


if __name__ == "__main__":  # python -m sandbox.plan [stack]: print the plan
    import sys

    print(json.dumps(plan_from_stack(sys.argv[1] if len(sys.argv) > 1 else "dev").to_dict(), indent=2))
