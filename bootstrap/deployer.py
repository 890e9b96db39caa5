"""Pure parts of the bootstrap: validated config and the deployer policy documents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cosmos_export import contract

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
AWS_AUDIENCE = "sts.amazonaws.com"
#: Path of every IAM role the main program creates (components/*): the deployer may manage only these.
PROGRAM_ROLE_PATH = "/cosmos-s3-export/"
STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"

_ORG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_ENV = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_RG_ID = re.compile(r"^/subscriptions/[0-9a-f-]{36}/resourceGroups/[\w.()-]{1,90}$", re.I)
_OIDC_ARN = re.compile(rf"^arn:aws[a-z-]*:iam::\d{{12}}:oidc-provider/{re.escape(GITHUB_OIDC_HOST)}$")


class BootstrapConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BootstrapConfig:
    github_org: str
    github_repo: str
    environment: str
    azure_resource_group_id: str
    oidc_provider_arn: str = ""

    def __post_init__(self) -> None:
        key = "cosmos-s3-export-bootstrap"
        if not _ORG.match(self.github_org or ""):
            raise BootstrapConfigError(f"{key}:githubOrg={self.github_org!r} is not a GitHub organisation/user name "
                                       "(letters, digits, single hyphens, at most 39): set it to the repository owner")
        if not _REPO.match(self.github_repo or "") or self.github_repo in (".", ".."):
            raise BootstrapConfigError(f"{key}:githubRepo={self.github_repo!r} is not a repository name "
                                       "(letters, digits, '.', '_', '-'): set it to the repository name only")
        if not _ENV.match(self.environment or "") or self.environment.endswith("-preview"):
            raise BootstrapConfigError(f"{key}:environment={self.environment!r} must be a lower-case stack name "
                                       "such as 'dev' (the '-preview' environment is derived from it)")
        if not (STACKS_DIR / f"Pulumi.{self.environment}.yaml").exists():
            known = sorted(p.name[7:-5] for p in STACKS_DIR.glob("Pulumi.*.yaml"))
            raise BootstrapConfigError(f"{key}:environment={self.environment!r} has no stacks/Pulumi."
                                       f"{self.environment}.yaml; use one of {known}")
        if not _RG_ID.match(self.azure_resource_group_id or ""):
            raise BootstrapConfigError(f"{key}:azureResourceGroupId={self.azure_resource_group_id!r} is not "
                                       "/subscriptions/<subscription id>/resourceGroups/<name> (the Cosmos account's group)")
        if self.oidc_provider_arn and not _OIDC_ARN.match(self.oidc_provider_arn):
            raise BootstrapConfigError(f"{key}:oidcProviderArn={self.oidc_provider_arn!r} is not an IAM OIDC provider "
                                       f"ARN for {GITHUB_OIDC_HOST}: leave it empty to create the provider")

    @property
    def subscription_id(self) -> str:
        return self.azure_resource_group_id.split("/")[2]

    def subject(self, preview: bool = False) -> str:
        """The only GitHub OIDC subject a deployer identity trusts: this repo, this environment."""
        env = f"{self.environment}-preview" if preview else self.environment
        return f"repo:{self.github_org}/{self.github_repo}:environment:{env}"


def github_trust_policy(provider_arn: str, subject: str) -> dict:
    """Exact-match trust (StringEquals on sub and aud): never StringLike, never a wildcard."""
    if "*" in subject or "?" in subject:
        raise ValueError(f"subject {subject!r} contains a wildcard; trust only one repository environment")
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "GitHubActionsThisRepoEnvironment",
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{GITHUB_OIDC_HOST}:aud": AWS_AUDIENCE,
                                       f"{GITHUB_OIDC_HOST}:sub": subject}},
    }]}


#: Services the main program declares resources in (see components/).
_SERVICES = ["s3", "kms", "ecs", "ecr", "logs", "scheduler", "sqs", "cloudtrail", "ec2"]


def deploy_policy(account_id: str, region: str) -> dict:
    """What `pulumi up` of the main program needs: its services, and IAM only under its role path.

    Least privilege *-ish*: service-level actions are broad (Pulumi creates,
    updates and deletes every kind of resource it declares), but IAM, the
    powerful one, is confined to roles under /cosmos-s3-export/, PassRole only
    to ECS tasks and the scheduler, and no user, access key or login profile.
    """
    roles = f"arn:aws:iam::{account_id}:role{PROGRAM_ROLE_PATH}*"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ProgramServices", "Effect": "Allow", "Action": [f"{s}:*" for s in _SERVICES], "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        {"Sid": "ProgramRoles", "Effect": "Allow", "Resource": roles, "Action": [
            "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateAssumeRolePolicy",
            "iam:TagRole", "iam:UntagRole", "iam:ListRoleTags", "iam:PutRolePolicy", "iam:GetRolePolicy",
            "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
            "iam:ListInstanceProfilesForRole"]},
        {"Sid": "PassProgramRoles", "Effect": "Allow", "Action": "iam:PassRole", "Resource": roles,
         "Condition": {"StringEquals": {"iam:PassedToService": ["ecs-tasks.amazonaws.com", "scheduler.amazonaws.com"]}}},
        {"Sid": "OutboundFederationAndIdentity", "Effect": "Allow", "Resource": "*", "Action": [
            "iam:EnableOutboundWebIdentityFederation", "iam:GetOutboundWebIdentityFederationInfo",
            "iam:CreateServiceLinkedRole", "sts:GetCallerIdentity"]},
    ]}


def preview_policy(account_id: str) -> dict:
    """Read-only for `pulumi preview`: describe/list/get on the program's services, no object reads."""
    read = [f"{s}:{verb}*" for s in _SERVICES if s != "s3" for verb in ("Describe", "List", "Get")]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadProgramServices", "Effect": "Allow", "Action": read, "Resource": "*"},
        # Bucket ARNs only (no /*): bucket configuration yes, object contents no.
        {"Sid": "ReadBucketConfiguration", "Effect": "Allow", "Action": ["s3:GetBucket*", "s3:GetEncryptionConfiguration",
         "s3:GetLifecycleConfiguration", "s3:GetBucketObjectLockConfiguration", "s3:ListAllMyBuckets"],
         "Resource": "arn:aws:s3:::*"},
        {"Sid": "ReadProgramRoles", "Effect": "Allow", "Resource": f"arn:aws:iam::{account_id}:role{PROGRAM_ROLE_PATH}*",
         "Action": ["iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
                    "iam:ListRoleTags"]},
        {"Sid": "Identity", "Effect": "Allow", "Resource": "*",
         "Action": ["sts:GetCallerIdentity", "iam:GetOutboundWebIdentityFederationInfo"]},
    ]}


#: Azure actions the deployer needs on the Cosmos account's resource group.
AZURE_DEPLOY_ACTIONS = [
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.DocumentDB/databaseAccounts/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/*",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/*",
    "Microsoft.Insights/diagnosticSettings/*",
    "Microsoft.OperationalInsights/workspaces/*",
]
#: Never: account keys or connection strings (the worker uses none).
AZURE_DEPLOY_NOT_ACTIONS = [
    "Microsoft.DocumentDB/databaseAccounts/listKeys/action",
    "Microsoft.DocumentDB/databaseAccounts/readonlykeys/action",
    "Microsoft.DocumentDB/databaseAccounts/listConnectionStrings/action",
    "Microsoft.OperationalInsights/workspaces/sharedKeys/action",
]
#: Built-in Azure "Reader" role (previews).
AZURE_READER_ROLE = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
#: Microsoft Graph and its application permission Application.ReadWrite.OwnedBy: the deployer
#: may manage only the Entra applications it owns (the worker's), nothing else in the tenant.
MS_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_APPLICATION_READWRITE_OWNEDBY = "18a4783c-866b-4cc7-a460-3d5e5662c884"
ENTRA_AUDIENCE = contract.TOKEN_EXCHANGE_AUDIENCE
