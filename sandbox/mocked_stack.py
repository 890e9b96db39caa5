"""Run the real Pulumi program of one stack under `pulumi.runtime.set_mocks`.

Used by tests/infra, the CrossGuard policy tests and the sandbox (which
configures its local STS / Entra / Cosmos doubles from what the program
declares, so a wrong issuer or subject in the infrastructure fails locally).
It lives here, not in tests/, because `sandbox up` runs it (sandbox/plan.py):
the tests import it from the sandbox, never the other way round.

    run = run_stack("dev")                      # stacks/Pulumi.dev.yaml, as-is
    run = run_stack("prod", {"cosmosAccessEnabled": False})
    run.one("aws:kms/key:Key")                  # -> Registered(type_, name, inputs, outputs, ...)
    run.named("aws:iam/role:Role", "export-prod-task")  # lookups by name always name the type too
    run.children("cosmos-s3-export:aws:TaskRole")       # custom resources a component declared
    run.outputs["taskRoleArn"]                  # stack outputs, resolved

Logical names are only unique per type (and parent): the components of a
stack all share `export-<stack>`, and the worker's log group and the Log
Analytics workspace are both `export-<stack>-logs`. So every lookup filters
by type, and `resources` holds custom resources and components alike
(`Registered.custom` tells them apart; `counts()` counts custom ones).

Mocks return realistic ids/ARNs derived deterministically (uuid5) from the
stack and the logical name, so repeated runs give identical values.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.sync_await import _sync_await

from sandbox.seed import PARTITION_KEY_PATH

REPO = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO / "stacks"
PROJECT = "cosmos-s3-export"

#: Fake accounts / tenants per stack (dev and staging share an AWS account).
_ACCOUNTS = {"dev": "111122223333", "staging": "111122223333", "prod": "444455556666"}
_TENANT = "72f988bf-0000-4c3a-9d1e-2b7c6f5e4d3a"
_SUBSCRIPTION = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
_NS = uuid.UUID("0b7d7f58-2a64-4f8e-9a0c-6c1f7d3e5b21")
#: Partition keys the mocked source containers report (getSqlResourceSqlContainer): the sandbox's own
#: key path, except `events`, which has a hierarchical (MultiHash) key.
DEFAULT_PARTITION_KEY = {"paths": [PARTITION_KEY_PATH], "kind": "Hash", "version": 2}
SOURCE_PARTITION_KEYS = {"events": {"paths": ["/tenantId", "/deviceId"], "kind": "MultiHash", "version": 2}}
#: The rest of each source's definition (what a target must share for a drill to pass): `orders` has a tuned
#: indexing policy and TTL on, `customers` a unique key; the others Cosmos's defaults. The sandbox's gateway
#: double creates its source containers with these too (it plays the same account).
DEFAULT_DEFINITION = {
    "indexingPolicy": {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}],
    }
}
SOURCE_DEFINITIONS = {
    "orders": {
        "indexingPolicy": {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": "/items/*"}, {"path": '/"_etag"/?'}],
            "compositeIndexes": [
                [{"path": "/customerId", "order": "ascending"}, {"path": "/placedAt", "order": "descending"}]
            ],
        },
        "defaultTtl": -1,
    },
    "customers": {**DEFAULT_DEFINITION, "uniqueKeyPolicy": {"uniqueKeys": [{"paths": ["/email"]}]}},
}

#: Overrides that turn a stack's restore block and snapshot schedule off (the export-only shape), and its
#: operators (an operator of `restore` needs the restore task).
WITHOUT_RESTORE: dict[str, Any] = {"restore": None, "snapshotSchedule": None, "operators": None}

_lock = threading.Lock()  # the Pulumi runtime settings are process-global


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "|".join(parts)))


def _hex(n: int, *parts: str) -> str:
    return uuid.uuid5(_NS, "|".join(parts)).hex[:n]


def stack_names() -> list[str]:
    """Every stack with a file in stacks/."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The stack file's config as the CLI hands it to the program: full keys, strings, JSON for structures.

    Overrides use short keys for this project (``cosmosAccessEnabled``) or full
    keys (``aws:region``); a value of None removes the key.
    """
    data = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}
    merged: dict[str, Any] = dict(data.get("config") or {})
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            merged.pop(full, None)
        else:
            merged[full] = value
    return {k: _to_config_string(v) for k, v in merged.items()}


def _to_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # bools -> "true"/"false", numbers, lists, mappings


@dataclass
class Registered:
    type_: str
    name: str
    inputs: dict
    outputs: dict
    #: False for a ComponentResource (no cloud object behind it).
    custom: bool = True
    urn: str = ""
    #: URN of the resource (component or stack) that declared it.
    parent_urn: str = ""
    #: ResourceOptions(retain_on_delete=True): `pulumi destroy` leaves the cloud object in place.
    retain_on_delete: bool = False


@dataclass
class StackRun:
    stack: str
    config: dict[str, str]
    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Registered]:
        return [r for r in self.resources if r.type_ == type_token]

    def one(self, type_token: str) -> Registered:
        found = self.of_type(type_token)
        if len(found) != 1:
            raise AssertionError(f"expected exactly one {type_token}, found {len(found)}: {[r.name for r in found]}")
        return found[0]

    def named(self, type_token: str, name: str) -> Registered:
        """The resource of this type with this logical name (names alone are not unique)."""
        found = [r for r in self.of_type(type_token) if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected exactly one {type_token} named {name!r}, found {len(found)}")
        return found[0]

    def components(self) -> list[Registered]:
        return [r for r in self.resources if not r.custom]

    def children(self, component_type: str, name: str | None = None) -> list[Registered]:
        """Custom resources declared directly by the component of this type (and name, when there are several)."""
        component = self.one(component_type) if name is None else self.named(component_type, name)
        return [r for r in self.resources if r.custom and r.parent_urn == component.urn]

    def counts(self) -> dict[str, int]:
        """Custom resources (what the cloud gets) per type; components are not counted."""
        out: dict[str, int] = {}
        for r in self.resources:
            if r.custom:
                out[r.type_] = out.get(r.type_, 0) + 1
        return dict(sorted(out.items()))

    # --- What the sandbox configures its doubles from -----------------------

    @property
    def issuer(self) -> str:
        return self.outputs["awsIssuer"]

    @property
    def task_role_arn(self) -> str:
        return self.outputs["taskRoleArn"]

    @property
    def tenant_id(self) -> str:
        return self.outputs["azureTenantId"]

    @property
    def client_id(self) -> str:
        return self.outputs["azureClientId"]

    @property
    def service_principal_object_id(self) -> str:
        return self.outputs["servicePrincipalObjectId"]

    @property
    def bucket(self) -> str:
        return self.outputs["bucketName"]

    @property
    def prefix(self) -> str:
        return self.outputs["exportPrefix"]

    @property
    def kms_key_arn(self) -> str:
        return self.outputs["kmsKeyArn"]

    @property
    def worker_environment(self) -> dict[str, str]:
        return dict(self.outputs["workerEnvironment"])

    def federated_credentials(self) -> list[dict]:
        """[{issuer, subject, audiences, display_name}] of every FIC declared."""
        return [
            {
                "issuer": r.inputs["issuer"],
                "subject": r.inputs["subject"],
                "audiences": list(r.inputs["audiences"]),
                "display_name": r.inputs["displayName"],
            }
            for r in self.of_type(
                "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
            )
        ]

    def cosmos_role_assignments(self) -> list[dict]:
        """[{principal_id, scope, relative_scope, data_actions}] with the data actions of the assigned role."""
        from cosmos_export import contract

        definitions = {r.outputs["id"]: r for r in self.of_type("azure-native:cosmosdb:SqlResourceSqlRoleDefinition")}
        out = []
        for r in self.of_type("azure-native:cosmosdb:SqlResourceSqlRoleAssignment"):
            role_id = r.inputs["roleDefinitionId"]
            if role_id in definitions:
                actions = [a for p in definitions[role_id].inputs["permissions"] for a in p.get("dataActions", [])]
            elif role_id.endswith(f"/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}"):
                actions = list(contract.COSMOS_BUILTIN_DATA_READER_ACTIONS)
            else:
                raise AssertionError(f"assignment {r.name} uses an unknown role {role_id}")
            scope = r.inputs["scope"]
            account_id = scope.split("/dbs/")[0]
            out.append(
                {
                    "principal_id": r.inputs["principalId"],
                    "scope": scope,
                    "relative_scope": scope[len(account_id) :] or "/",
                    "data_actions": actions,
                    "role_definition_id": role_id,
                }
            )
        return out

    def task_role(self) -> Registered:
        """The IAM role whose ARN the stack exports as the task role."""
        found = [r for r in self.of_type("aws:iam/role:Role") if r.outputs["arn"] == self.task_role_arn]
        if len(found) != 1:
            raise AssertionError(f"expected one IAM role with the exported task role ARN, found {len(found)}")
        return found[0]

    def task_role_policy(self) -> dict:
        """The task role's inline policy document (parsed)."""
        role = self.task_role()
        policies = [r for r in self.of_type("aws:iam/rolePolicy:RolePolicy") if r.inputs["role"] == role.outputs["id"]]
        if len(policies) != 1:
            raise AssertionError(f"expected one inline policy on the task role, found {len(policies)}")
        return json.loads(policies[0].inputs["policy"])

    def task_definition(self, suffix: str = "") -> Registered:
        """The export task definition; suffix "-restore" (restore/drill) or "-snapshot" (scheduled snapshots)."""
        return self.named("aws:ecs/taskDefinition:TaskDefinition", f"export-{self.stack}{suffix}-task-definition")

    def task_definition_environment(self, suffix: str = "") -> dict[str, str]:
        (container,) = json.loads(self.task_definition(suffix).inputs["containerDefinitions"])
        return {e["name"]: e["value"] for e in container["environment"]}

    @property
    def has_restore(self) -> bool:
        return "restoreTaskRoleArn" in self.outputs


class _Monitor(MockMonitor):
    """Tells the mocks where each resource sits (its URN and parent), which Mocks.new_resource is not given."""

    def __init__(self, mocks: "_Mocks"):
        super().__init__(mocks)
        self._mocks = mocks

    def RegisterResource(self, request):
        # new_resource runs synchronously inside this call, on this thread.
        self._mocks.placement.urn = self.make_urn(request.parent, request.type, request.name)
        self._mocks.placement.parent = request.parent
        self._mocks.placement.retain_on_delete = bool(getattr(request, "retainOnDelete", False))
        return super().RegisterResource(request)


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, stack: str, region: str):
        self.stack = stack
        self.region = region
        self.placement = threading.local()
        self.account = _ACCOUNTS.get(stack, "123456789012")
        self.issuer = f"https://{_uuid('issuer', self.account)}.tokens.sts.global.api.aws"
        self.registered: list[Registered] = []

    # Resources -----------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        t, name, inputs = args.typ, args.name, dict(args.inputs)
        acct, region = self.account, self.region
        physical = inputs.get("name") or f"{name}-{_hex(7, self.stack, name)}"
        out: dict[str, Any] = dict(inputs)
        rid = f"{name}-{_hex(8, self.stack, name, 'id')}"
        if t == "aws:kms/key:Key":
            rid = _uuid(self.stack, name, "kms")
            out.update(keyId=rid, arn=f"arn:aws:kms:{region}:{acct}:key/{rid}")
        elif t == "aws:kms/alias:Alias":
            out["arn"] = f"arn:aws:kms:{region}:{acct}:{inputs['name']}"
        elif t == "aws:s3/bucket:Bucket":
            rid = inputs["bucket"]
            out.update(arn=f"arn:aws:s3:::{rid}", bucketDomainName=f"{rid}.s3.amazonaws.com")
        elif t == "aws:iam/role:Role":
            rid = physical
            out.update(
                name=physical,
                arn=f"arn:aws:iam::{acct}:role{inputs.get('path', '/')}{physical}",
                uniqueId="AROA" + _hex(17, name).upper(),
            )
        elif t == "aws:iam/rolePolicy:RolePolicy":
            rid = f"{inputs['role']}:{physical}"
        elif t == "aws:iam/outboundWebIdentityFederation:OutboundWebIdentityFederation":
            rid = acct
            out["issuerIdentifier"] = self.issuer
        elif t == "aws:ecr/repository:Repository":
            rid = physical
            out.update(
                name=physical,
                arn=f"arn:aws:ecr:{region}:{acct}:repository/{physical}",
                registryId=acct,
                repositoryUrl=f"{acct}.dkr.ecr.{region}.amazonaws.com/{physical}",
            )
        elif t == "docker-build:index:Image":
            tag = inputs["tags"][0]
            digest = "sha256:" + (_hex(32, tag) * 2)
            out.update(digest=digest, ref=f"{tag}@{digest}")
        elif t == "aws:cloudwatch/logGroup:LogGroup":
            rid = physical
            out.update(name=physical, arn=f"arn:aws:logs:{region}:{acct}:log-group:{physical}")
        elif t == "aws:ecs/cluster:Cluster":
            rid = f"arn:aws:ecs:{region}:{acct}:cluster/{physical}"
            out.update(name=physical, arn=rid)
        elif t == "aws:ecs/taskDefinition:TaskDefinition":
            base = f"arn:aws:ecs:{region}:{acct}:task-definition/{inputs['family']}"
            rid = inputs["family"]
            out.update(arn=f"{base}:1", arnWithoutRevision=base, revision=1)
        elif t == "aws:ec2/securityGroup:SecurityGroup":
            rid = "sg-" + _hex(17, self.stack, name)
            out.update(arn=f"arn:aws:ec2:{region}:{acct}:security-group/{rid}")
        elif t == "aws:sqs/queue:Queue":
            rid = f"https://sqs.{region}.amazonaws.com/{acct}/{physical}"
            out.update(name=physical, url=rid, arn=f"arn:aws:sqs:{region}:{acct}:{physical}")
        elif t == "aws:scheduler/schedule:Schedule":
            rid = physical
            out.update(name=physical, arn=f"arn:aws:scheduler:{region}:{acct}:schedule/default/{physical}")
        elif t == "aws:sfn/stateMachine:StateMachine":
            rid = f"arn:aws:states:{region}:{acct}:stateMachine:{physical}"
            out.update(name=physical, arn=rid)
        elif t == "aws:cloudtrail/trail:Trail":
            rid = f"arn:aws:cloudtrail:{region}:{acct}:trail/{inputs['name']}"
            out["arn"] = rid
        elif t == "aws:sns/topic:Topic":
            rid = f"arn:aws:sns:{region}:{acct}:{physical}"
            out.update(name=physical, arn=rid)
        elif t == "aws:sns/topicSubscription:TopicSubscription":
            rid = f"{inputs['topic']}:{_uuid(self.stack, name, 'subscription')}"
            out["arn"] = rid
        elif t == "aws:cloudwatch/eventRule:EventRule":
            rid = physical
            out.update(name=physical, arn=f"arn:aws:events:{region}:{acct}:rule/{physical}")
        elif t == "aws:cloudwatch/metricAlarm:MetricAlarm":
            rid = physical
            out.update(name=physical, arn=f"arn:aws:cloudwatch:{region}:{acct}:alarm:{physical}")
        elif t == "aws:cloudwatch/dashboard:Dashboard":
            rid = inputs["dashboardName"]
            out["dashboardArn"] = f"arn:aws:cloudwatch::{acct}:dashboard/{rid}"
        elif t == "azuread:index/application:Application":
            object_id = _uuid(self.stack, name, "app-object")
            rid = f"/applications/{object_id}"
            out.update(objectId=object_id, clientId=_uuid(self.stack, name, "client"))
        elif t == "azuread:index/servicePrincipal:ServicePrincipal":
            rid = _uuid(self.stack, name, "sp-object")
            out.update(objectId=rid, applicationTenantId=_TENANT, type="Application")
        elif t == "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential":
            credential_id = _uuid(self.stack, name, "fic")
            rid = f"{inputs['applicationId']}/federatedIdentityCredential/{credential_id}"
            out["credentialId"] = credential_id
        elif t == "azure-native:cosmosdb:SqlResourceSqlRoleDefinition":
            rid = f"{self._cosmos_account_id(inputs)}/sqlRoleDefinitions/{inputs['roleDefinitionId']}"
            out["name"] = inputs["roleDefinitionId"]
        elif t == "azure-native:cosmosdb:SqlResourceSqlRoleAssignment":
            rid = f"{self._cosmos_account_id(inputs)}/sqlRoleAssignments/{inputs['roleAssignmentId']}"
            out["name"] = inputs["roleAssignmentId"]
        elif t == "azure-native:cosmosdb:SqlResourceSqlDatabase":
            rid = f"{self._cosmos_account_id(inputs)}/sqlDatabases/{inputs['databaseName']}"
            out["name"] = inputs["databaseName"]
        elif t == "azure-native:cosmosdb:SqlResourceSqlContainer":
            rid = (
                f"{self._cosmos_account_id(inputs)}/sqlDatabases/{inputs['databaseName']}"
                f"/containers/{inputs['containerName']}"
            )
            out["name"] = inputs["containerName"]
        elif t == "azure-native:operationalinsights:Workspace":
            rid = (
                f"/subscriptions/{_SUBSCRIPTION}/resourceGroups/{inputs['resourceGroupName']}"
                f"/providers/Microsoft.OperationalInsights/workspaces/{physical}"
            )
            out.update(name=physical, customerId=_uuid(self.stack, name, "workspace"))
        elif t == "azure-native:monitor:DiagnosticSetting":
            rid = f"{inputs['resourceUri']}/providers/Microsoft.Insights/diagnosticSettings/{inputs['name']}"
        out.setdefault("id", rid)
        self.registered.append(
            Registered(
                t,
                name,
                inputs,
                out,
                custom=bool(args.custom),
                urn=getattr(self.placement, "urn", ""),
                parent_urn=getattr(self.placement, "parent", ""),
                retain_on_delete=getattr(self.placement, "retain_on_delete", False),
            )
        )
        return rid, out

    def _cosmos_account_id(self, inputs: dict) -> str:
        return (
            f"/subscriptions/{_SUBSCRIPTION}/resourceGroups/{inputs['resourceGroupName']}"
            f"/providers/Microsoft.DocumentDB/databaseAccounts/{inputs['accountName']}"
        )

    # Invokes ---------------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs):
        tok, a = args.token, args.args
        if tok == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account,
                "arn": f"arn:aws:iam::{self.account}:user/deployer",
                "userId": "AIDA" + _hex(17, self.account).upper(),
                "id": self.account,
            }
        if tok == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if tok == "aws:iam/getOutboundWebIdentityFederation:getOutboundWebIdentityFederation":
            return {"issuerIdentifier": self.issuer}
        if tok == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "mock-ecr-password",
                "authorizationToken": "bW9jaw==",
                "proxyEndpoint": f"https://{self.account}.dkr.ecr.{self.region}.amazonaws.com",
                "expiresAt": "2030-01-01T00:00:00Z",
                "id": self.region,
            }
        if tok == "azuread:index/getClientConfig:getClientConfig":
            return {
                "tenantId": _TENANT,
                "clientId": _uuid("deployer-client"),
                "objectId": _uuid("deployer-object"),
                "id": _TENANT,
            }
        if tok == "azure-native:cosmosdb:getDatabaseAccount":
            name, rg = a["accountName"], a["resourceGroupName"]
            return {
                "id": self._cosmos_account_id({"accountName": name, "resourceGroupName": rg}),
                "name": name,
                "location": "westeurope",
                "kind": "GlobalDocumentDB",
                "documentEndpoint": f"https://{name}.documents.azure.com:443/",
                "consistencyPolicy": {"defaultConsistencyLevel": "Session"},
                "disableLocalAuth": True,
                "databaseAccountOfferType": "Standard",
                "locations": [],
                "readLocations": [],
                "writeLocations": [],
                "failoverPolicies": [],
                "privateEndpointConnections": [],
                "provisioningState": "Succeeded",
            }
        if tok == "azure-native:cosmosdb:getSqlResourceSqlContainer":
            db, container = a["databaseName"], a["containerName"]
            account_id = self._cosmos_account_id(a)
            return {
                "id": f"{account_id}/sqlDatabases/{db}/containers/{container}",
                "name": container,
                "type": "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
                "location": "westeurope",
                "resource": {
                    "id": container,
                    "partitionKey": SOURCE_PARTITION_KEYS.get(container, DEFAULT_PARTITION_KEY),
                    **SOURCE_DEFINITIONS.get(container, DEFAULT_DEFINITION),
                    "rid": _hex(8, container),
                    "ts": 1764633600,
                    "etag": f'"{_hex(16, container)}"',
                },
            }
        raise NotImplementedError(f"mocked_stack: no mock for invoke {tok}; add one in sandbox/mocked_stack.py")


def run_stack(stack: str, overrides: dict[str, Any] | None = None) -> StackRun:
    """Run the program for `stack` under mocks; returns what it registered and its resolved outputs.

    Config errors (components.config.ConfigError) propagate unchanged.
    """
    from components import program

    config = stack_config(stack, overrides)
    region = config.get("aws:region", "eu-west-1")
    with _lock:
        mocks = _Mocks(stack, region)
        set_root_resource(None)  # type: ignore[arg-type]  # None: a fresh root Stack per run (outputs never leak)
        pulumi.runtime.set_all_config(config)
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=_Monitor(mocks))
        root = pulumi.runtime.settings.get_root_resource()

        async def _run():
            program.main()
            # Everything declared (applies included) must settle before we look.
            await pulumi.runtime.stack.wait_for_rpcs()

        _sync_await(pulumi.runtime.stack.run_pulumi_func(lambda: _sync_await(_run())))
        outputs = {k: _sync_await(pulumi.Output.from_input(v).future()) for k, v in root.outputs.items()}  # type: ignore[union-attr]  # the root is a Stack, which has outputs
        resources = [r for r in mocks.registered]
    return StackRun(stack=stack, config=config, resources=resources, outputs=outputs)


if __name__ == "__main__":  # python -m sandbox.mocked_stack [stack...]: resource counts per stack
    import sys

    for name in sys.argv[1:] or stack_names():
        run = run_stack(name)
        counts = run.counts()
        print(f"== {name}: {sum(counts.values())} resources in {len(run.components())} components")
        for type_, count in counts.items():
            print(f"  {count:3d}  {type_}")
