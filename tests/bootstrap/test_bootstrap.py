"""The bootstrap program under mocks, for every bootstrap stack file: trust pinned to repo + environment."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.sync_await import _sync_await

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"
sys.path.insert(0, str(BOOTSTRAP))

import deployer as d  # noqa: E402
import identities  # noqa: E402

PROJECT = "cosmos-s3-export-bootstrap"
STACKS = sorted(p.name[7:-5] for p in BOOTSTRAP.glob("Pulumi.*.yaml"))
ACCOUNT = "111122223333"
_lock = threading.Lock()


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.registered: list[tuple[str, str, dict]] = []

    def new_resource(self, args):
        out = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == "aws:iam/role:Role":
            out.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{args.name}", name=args.name)
            rid = args.name
        elif args.typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            out["arn"] = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
        elif args.typ == "azuread:index/application:Application":
            rid = f"/applications/{args.name}-object"
            out.update(clientId=f"{args.name}-client")
        elif args.typ == "azuread:index/servicePrincipal:ServicePrincipal":
            rid = f"{args.name}-object"
            out["objectId"] = rid
        elif args.typ == "azure-native:authorization:RoleDefinition":
            rid = f"{args.inputs['scope']}/providers/Microsoft.Authorization/roleDefinitions/{args.name}"
        self.registered.append((args.typ, args.name, out))
        return rid, out

    def call(self, args):
        return {
            "aws:index/getCallerIdentity:getCallerIdentity": {"accountId": ACCOUNT, "arn": "arn", "userId": "u", "id": ACCOUNT},
            "aws:index/getRegion:getRegion": {"name": "eu-west-1", "region": "eu-west-1", "id": "eu-west-1"},
            "azuread:index/getClientConfig:getClientConfig": {"tenantId": "t", "clientId": "c", "objectId": "o", "id": "t"},
            "azuread:index/getServicePrincipal:getServicePrincipal": {"objectId": "graph-sp-object", "id": "graph-sp-object",
                                                                      "clientId": d.MS_GRAPH_APP_ID},
        }[args.token]


def config_of(stack: str) -> d.BootstrapConfig:
    raw = yaml.safe_load((BOOTSTRAP / f"Pulumi.{stack}.yaml").read_text())["config"]
    get = lambda k: raw.get(f"{PROJECT}:{k}", "")  # noqa: E731
    return d.BootstrapConfig(github_org=get("githubOrg"), github_repo=get("githubRepo"), environment=get("environment"),
                             azure_resource_group_id=get("azureResourceGroupId"), oidc_provider_arn=get("oidcProviderArn"))


def run(stack: str) -> list[tuple[str, str, dict]]:
    config = config_of(stack)
    with _lock:
        mocks = Mocks()
        set_root_resource(None)  # type: ignore[arg-type]  # None: a fresh root Stack per run
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)

        async def body():
            identities.build(config)
            await pulumi.runtime.stack.wait_for_rpcs()

        _sync_await(pulumi.runtime.stack.run_pulumi_func(lambda: _sync_await(body())))
        return mocks.registered


def of(registered, type_):
    return [(n, props) for t, n, props in registered if t == type_]


def test_every_environment_has_a_bootstrap_stack():
    assert STACKS == ["dev", "prod", "staging"]


@pytest.mark.parametrize("stack", STACKS)
def test_aws_roles_trust_only_this_repo_environment(stack):
    registered = run(stack)
    roles = dict(of(registered, "aws:iam/role:Role"))
    assert sorted(roles) == [f"gh-{stack}-deploy", f"gh-{stack}-preview"]
    for name, suffix in ((f"gh-{stack}-deploy", ""), (f"gh-{stack}-preview", "-preview")):
        [statement] = json.loads(roles[name]["assumeRolePolicy"])["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"}
        assert statement["Condition"] == {"StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": f"repo:acme/cosmos-s3-export:environment:{stack}{suffix}",
        }}
        assert "*" not in json.dumps(statement["Condition"])


@pytest.mark.parametrize("stack", STACKS)
def test_entra_credentials_pinned_and_no_secret(stack):
    registered = run(stack)
    fics = sorted((p["subject"], p["issuer"], tuple(p["audiences"]))
                  for _, p in of(registered, "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"))
    assert fics == [
        (f"repo:acme/cosmos-s3-export:environment:{stack}", "https://token.actions.githubusercontent.com", ("api://AzureADTokenExchange",)),
        (f"repo:acme/cosmos-s3-export:environment:{stack}-preview", "https://token.actions.githubusercontent.com", ("api://AzureADTokenExchange",)),
    ]
    types = {t for t, _, _ in registered}
    assert not types & {"azuread:index/applicationPassword:ApplicationPassword", "aws:iam/accessKey:AccessKey",
                        "azuread:index/applicationCertificate:ApplicationCertificate"}


@pytest.mark.parametrize("stack", STACKS)
def test_azure_assignments_scoped_to_cosmos_resource_group(stack):
    registered = run(stack)
    rg = config_of(stack).azure_resource_group_id
    assignments = dict(of(registered, "azure-native:authorization:RoleAssignment"))
    assert {n: (a["scope"], a["principalId"]) for n, a in assignments.items()} == {
        f"gh-{stack}-deployer-assignment": (rg, f"gh-{stack}-deployer-sp-object"),
        f"gh-{stack}-previewer-assignment": (rg, f"gh-{stack}-previewer-sp-object"),
    }
    [(_, definition)] = of(registered, "azure-native:authorization:RoleDefinition")
    assert definition["assignableScopes"] == [rg]
    assert "Microsoft.DocumentDB/databaseAccounts/listKeys/action" in definition["permissions"][0]["notActions"]
    assert not any(a == "*" or a.startswith("Microsoft.Authorization") for a in definition["permissions"][0]["actions"])


def test_staging_adopts_the_shared_account_provider_dev_creates():
    assert len(of(run("dev"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider")) == 1
    assert of(run("staging"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    [(_, provider)] = of(run("prod"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider["url"] == "https://token.actions.githubusercontent.com"
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]


def test_deploy_policy_confines_iam_to_program_roles():
    doc = d.deploy_policy(ACCOUNT, "eu-west-1")
    iam = [s for s in doc["Statement"] if any(str(a).startswith("iam:") for a in s["Action"] if isinstance(s["Action"], list))
           or str(s["Action"]).startswith("iam:")]
    role_statements = [s for s in iam if s["Sid"] in ("ProgramRoles", "PassProgramRoles")]
    assert all(s["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/*" for s in role_statements)
    everything = json.dumps(doc)
    for forbidden in ("iam:CreateUser", "iam:CreateAccessKey", "iam:*", '"*:*"', "iam:AttachRolePolicy"):
        assert forbidden not in everything


def test_preview_policy_reads_no_objects():
    doc = json.dumps(d.preview_policy(ACCOUNT))
    assert "s3:GetObject\"" not in doc and "arn:aws:s3:::*/*" not in doc and ":Put" not in doc and ":Create" not in doc


def test_wildcard_subject_is_refused():
    with pytest.raises(ValueError, match=r"subject 'repo:acme/\*:environment:dev' contains a wildcard"):
        d.github_trust_policy("arn:aws:iam::1:oidc-provider/x", "repo:acme/*:environment:dev")


GOOD = dict(github_org="acme", github_repo="cosmos-s3-export", environment="dev",
            azure_resource_group_id="/subscriptions/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/resourceGroups/rg-orders-dev")


@pytest.mark.parametrize("field,value,message", [
    ("github_org", "acme/corp", "cosmos-s3-export-bootstrap:githubOrg='acme/corp' is not a GitHub organisation"),
    ("github_org", "*", "cosmos-s3-export-bootstrap:githubOrg='*' is not a GitHub organisation"),
    ("github_repo", "acme/cosmos-s3-export", "cosmos-s3-export-bootstrap:githubRepo='acme/cosmos-s3-export' is not a repository name"),
    ("environment", "Prod", "cosmos-s3-export-bootstrap:environment='Prod' must be a lower-case stack name"),
    ("environment", "dev-preview", "cosmos-s3-export-bootstrap:environment='dev-preview' must be a lower-case"),
    ("environment", "qa", "cosmos-s3-export-bootstrap:environment='qa' has no stacks/Pulumi.qa.yaml; use one of ['dev', 'prod', 'staging']"),
    ("azure_resource_group_id", "rg-orders-dev", "cosmos-s3-export-bootstrap:azureResourceGroupId='rg-orders-dev' is not /subscriptions/"),
    ("oidc_provider_arn", "arn:aws:iam::111122223333:oidc-provider/*", "cosmos-s3-export-bootstrap:oidcProviderArn="),
])
def test_bad_config_is_refused_with_the_key_value_and_fix(field, value, message):
    with pytest.raises(d.BootstrapConfigError) as err:
        d.BootstrapConfig(**{**GOOD, field: value})
    assert str(err.value).startswith(message)
