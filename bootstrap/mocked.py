"""Run the bootstrap program under `pulumi.runtime.set_mocks` (tests/bootstrap, tools/iam_documents.py).

registered = run("dev")   # [(type token, logical name, inputs+outputs)] for bootstrap/Pulumi.dev.yaml
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pulumi
import yaml
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.sync_await import _sync_await

BOOTSTRAP = Path(__file__).resolve().parent
sys.path.insert(0, str(BOOTSTRAP))

import deployer as d  # noqa: E402
import identities  # noqa: E402

PROJECT = "cosmos-s3-export-bootstrap"
STACKS = sorted(p.name[7:-5] for p in BOOTSTRAP.glob("Pulumi.*.yaml"))
#: dev and staging share an account (as in sandbox/mocked_stack.py), prod has its own.
ACCOUNTS = {"dev": "111122223333", "staging": "111122223333", "prod": "444455556666"}
_lock = threading.Lock()


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, account: str, region: str):
        self.account, self.region = account, region
        self.registered: list[tuple[str, str, dict]] = []

    def new_resource(self, args):
        out = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == "aws:iam/role:Role":
            name = args.inputs.get("name") or args.name
            out.update(arn=f"arn:aws:iam::{self.account}:role{args.inputs.get('path', '/')}{name}", name=name)
            rid = name
        elif args.typ == "aws:iam/policy:Policy":
            name = args.inputs.get("name") or args.name
            out.update(arn=f"arn:aws:iam::{self.account}:policy{args.inputs.get('path', '/')}{name}", name=name)
            rid = out["arn"]
        elif args.typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            out["arn"] = f"arn:aws:iam::{self.account}:oidc-provider/token.actions.githubusercontent.com"
        elif args.typ == "azuread:index/application:Application":
            rid = f"/applications/{args.name}-object"
            out.update(clientId=f"{args.name}-client", objectId=f"{args.name}-object")
        elif args.typ == "azuread:index/servicePrincipal:ServicePrincipal":
            rid = f"{args.name}-object"
            out["objectId"] = rid
        elif args.typ == "azure-native:authorization:RoleDefinition":
            rid = f"{args.inputs['scope']}/providers/Microsoft.Authorization/roleDefinitions/{args.name}"
        self.registered.append((args.typ, args.name, out))
        return rid, out

    def call(self, args):
        return {
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": self.account,
                "arn": "arn",
                "userId": "u",
                "id": self.account,
            },
            "aws:index/getRegion:getRegion": {"name": self.region, "region": self.region, "id": self.region},
            "azuread:index/getClientConfig:getClientConfig": {
                "tenantId": "t",
                "clientId": "c",
                "objectId": "o",
                "id": "t",
            },
            "azuread:index/getServicePrincipal:getServicePrincipal": {
                "objectId": "graph-sp-object",
                "id": "graph-sp-object",
                "clientId": d.MS_GRAPH_APP_ID,
            },
        }[args.token]


def stack_file(stack: str) -> dict:
    return yaml.safe_load((BOOTSTRAP / f"Pulumi.{stack}.yaml").read_text())["config"]


def config_of(stack: str) -> d.BootstrapConfig:
    raw = stack_file(stack)
    get = lambda k: raw.get(f"{PROJECT}:{k}", "")  # noqa: E731
    return d.BootstrapConfig(
        github_org=get("githubOrg"),
        github_repo=get("githubRepo"),
        environment=get("environment"),
        azure_resource_group_id=get("azureResourceGroupId"),
        oidc_provider_arn=get("oidcProviderArn"),
    )


def run(stack: str) -> list[tuple[str, str, dict]]:
    config = config_of(stack)
    with _lock:
        mocks = Mocks(ACCOUNTS.get(stack, "123456789012"), stack_file(stack).get("aws:region", "eu-west-1"))
        set_root_resource(None)  # type: ignore[arg-type]  # None: a fresh root Stack per run
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)

        async def body():
            identities.build(config)
            await pulumi.runtime.stack.wait_for_rpcs()

        _sync_await(pulumi.runtime.stack.run_pulumi_func(lambda: _sync_await(body())))
        return mocks.registered


def of(registered, type_):
    return [(n, props) for t, n, props in registered if t == type_]
