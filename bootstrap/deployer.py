"""Pure parts of the bootstrap: validated config and the deployer policy documents."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from cosmos_export import contract

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the program's components (shared names)
from components import fan_out, naming
from components.analytics_config import ATHENA_QUERY_ACTIONS, GLUE_READ_ACTIONS
from components.policies import ECS_SYNC_RULE

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
AWS_AUDIENCE = "sts.amazonaws.com"
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
            raise BootstrapConfigError(
                f"{key}:githubOrg={self.github_org!r} is not a GitHub organisation/user name "
                "(letters, digits, single hyphens, at most 39): set it to the repository owner"
            )
        if not _REPO.match(self.github_repo or "") or self.github_repo in (".", ".."):
            raise BootstrapConfigError(
                f"{key}:githubRepo={self.github_repo!r} is not a repository name "
                "(letters, digits, '.', '_', '-'): set it to the repository name only"
            )
        if not _ENV.match(self.environment or "") or self.environment.endswith("-preview"):
            raise BootstrapConfigError(
                f"{key}:environment={self.environment!r} must be a lower-case stack name "
                "such as 'dev' (the '-preview' environment is derived from it)"
            )
        if not (STACKS_DIR / f"Pulumi.{self.environment}.yaml").exists():
            known = sorted(p.name[7:-5] for p in STACKS_DIR.glob("Pulumi.*.yaml"))
            raise BootstrapConfigError(
                f"{key}:environment={self.environment!r} has no stacks/Pulumi."
                f"{self.environment}.yaml; use one of {known}"
            )
        if not _RG_ID.match(self.azure_resource_group_id or ""):
            raise BootstrapConfigError(
                f"{key}:azureResourceGroupId={self.azure_resource_group_id!r} is not "
                "/subscriptions/<subscription id>/resourceGroups/<name> (the Cosmos account's group)"
            )
        if self.oidc_provider_arn and not _OIDC_ARN.match(self.oidc_provider_arn):
            raise BootstrapConfigError(
                f"{key}:oidcProviderArn={self.oidc_provider_arn!r} is not an IAM OIDC provider "
                f"ARN for {GITHUB_OIDC_HOST}: leave it empty to create the provider"
            )

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
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "GitHubActionsThisRepoEnvironment",
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": AWS_AUDIENCE, f"{GITHUB_OIDC_HOST}:sub": subject}
                },
            }
        ],
    }


@dataclass(frozen=True)
class StackScope:
    """What one environment's deployer may touch: the facts of its main-program stack."""

    account_id: str
    region: str
    stack: str
    bucket: str
    vpc_id: str
    create_federation: bool = False
    force_destroy: bool = False
    #: The stack sets `fanOut` (components/fan_out.py): its Step Functions state machine and role.
    fan_out: bool = False

    @property
    def boundary_arn(self) -> str:
        return naming.boundary_arn(self.account_id, self.stack)

    @property
    def roles(self) -> str:
        """Every role of this stack (and of no other: the path ends in '/<stack>/')."""
        return f"arn:aws:iam::{self.account_id}:role{naming.role_path(self.stack)}*"

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    @property
    def named(self) -> str:
        """Name prefix of the stack's auto-named resources: 'export-<stack>-'."""
        return f"{naming.prefix(self.stack)}-"

    @property
    def buckets(self) -> list[str]:
        return [f"arn:aws:s3:::{self.bucket}", f"arn:aws:s3:::{naming.audit_bucket_name(self.bucket)}"]

    @property
    def state_machine(self) -> str:
        """The fan-out state machine: one fixed name per stack, export-<stack>-fan-out."""
        name = fan_out.state_machine_name(naming.prefix(self.stack))
        return fan_out.state_machine_arn(region=self.region, account_id=self.account_id, name=name)

    @property
    def state_machine_executions(self) -> str:
        """The executions of that machine: its own and its Distributed Map's child executions."""
        name = self.state_machine.rsplit(":", 1)[1]
        return self.arn("states", f"execution:{name}/*")

    @property
    def fan_out_role(self) -> str:
        return naming.role_arn(self.account_id, self.stack, fan_out.ROLE_KIND)

    @property
    def own_tag(self) -> dict:
        return {f"aws:ResourceTag/{naming.STACK_TAG}": self.stack}

    @property
    def request_tag(self) -> dict:
        return {f"aws:RequestTag/{naming.STACK_TAG}": self.stack}


def scope_of(account_id: str, region: str, environment: str) -> StackScope:
    """The deployer's scope, from the main program's own stack file (validated by its own config loader)."""
    c = program_stack_config(environment)
    return StackScope(
        account_id=account_id,
        region=region,
        stack=environment,
        bucket=c.bucket.bucket_name,
        vpc_id=c.worker.vpc_id,
        create_federation=c.identity.federation == "create",
        force_destroy=c.bucket.force_destroy,
        fan_out=c.schedule.fan_out is not None,
    )


def program_stack_config(environment: str):
    from components.config import load_stack_config

    data = yaml.safe_load((STACKS_DIR / f"Pulumi.{environment}.yaml").read_text())["config"]
    raw = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return load_stack_config(raw.get, environment, raw)


#: IAM actions that change what a role may do; each statement granting one must require the boundary
#: (the actions AWS evaluates iam:PermissionsBoundary for).
BOUNDARY_CONDITIONED_ACTIONS = frozenset(
    {
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:PutRolePermissionsBoundary",
    }
)
#: Read-only calls AWS authorises only on Resource "*" (no resource-level permission exists), which
#: `pulumi preview`/`up` make; every other action of the deployer and preview policies names the
#: stack's resources or requires its tag.
ACCOUNT_READS = frozenset(
    {
        "sts:GetCallerIdentity",
        "iam:GetOutboundWebIdentityFederationInfo",
        "ecs:DescribeTaskDefinition",
        "logs:DescribeLogGroups",
        "kms:ListAliases",
        "cloudtrail:DescribeTrails",
        "s3:ListAllMyBuckets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSecurityGroupRules",
        "ec2:DescribeVpcs",
        "ec2:DescribeTags",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeAccountAttributes",
    }
)
#: Every action that exists only on "*": the reads above, and these (each granted with a condition or
#: to the one identity that needs it).
STAR_ONLY_ACTIONS = ACCOUNT_READS | {
    "iam:EnableOutboundWebIdentityFederation",
    "ecr:GetAuthorizationToken",
    "ecs:DeregisterTaskDefinition",
    "sts:GetWebIdentityToken",
}
#: Bucket configuration Pulumi reads back on every refresh (aws.s3.Bucket and its sub-resources).
S3_BUCKET_READ = [
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketWebsite",
    "s3:GetBucketVersioning",
    "s3:GetAccelerateConfiguration",
    "s3:GetBucketRequestPayment",
    "s3:GetBucketLogging",
    "s3:GetLifecycleConfiguration",
    "s3:GetReplicationConfiguration",
    "s3:GetEncryptionConfiguration",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketTagging",
    "s3:GetBucketPolicy",
    "s3:GetBucketPolicyStatus",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketNotification",
]
S3_BUCKET_WRITE = [
    "s3:CreateBucket",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketPolicy",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketTagging",
]
KMS_KEY_READ = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags"]
KMS_KEY_ADMIN = [
    "kms:PutKeyPolicy",
    "kms:EnableKeyRotation",
    "kms:UpdateKeyDescription",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:ScheduleKeyDeletion",
]
ROLE_READ = [
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListRolePolicies",
    "iam:ListAttachedRolePolicies",
    "iam:ListRoleTags",
    "iam:ListInstanceProfilesForRole",
]
#: Role changes that alter no permission (name, description, session length, tags, and the trust:
#: no IAM condition key constrains a trust policy's content, see README "Security").
ROLE_LIFECYCLE = [
    "iam:DeleteRole",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
    "iam:UpdateAssumeRolePolicy",
    "iam:TagRole",
    "iam:UntagRole",
]


SNS_MANAGE = [
    "sns:CreateTopic",
    "sns:DeleteTopic",
    "sns:GetTopicAttributes",
    "sns:SetTopicAttributes",
    "sns:Subscribe",
    "sns:Unsubscribe",
    "sns:GetSubscriptionAttributes",
    "sns:SetSubscriptionAttributes",
    "sns:ListTagsForResource",
    "sns:TagResource",
    "sns:UntagResource",
]
CLOUDWATCH_ALARMS_MANAGE = [
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:ListTagsForResource",
    "cloudwatch:TagResource",
    "cloudwatch:UntagResource",
]
#: What `pulumi up` does to the fan-out state machine (aws.sfn.StateMachine; the provider's read also
#: lists its versions). No PublishStateMachineVersion or alias: the program publishes none.
STATES_MANAGE = [
    "states:CreateStateMachine",
    "states:UpdateStateMachine",
    "states:DeleteStateMachine",
    "states:DescribeStateMachine",
    "states:ListStateMachineVersions",
    "states:ListTagsForResource",
    "states:TagResource",
    "states:UntagResource",
]
STATES_READ = ["states:DescribeStateMachine", "states:ListStateMachineVersions", "states:ListTagsForResource"]
EVENTS_MANAGE = [
    "events:PutRule",
    "events:DeleteRule",
    "events:DescribeRule",
    "events:PutTargets",
    "events:RemoveTargets",
    "events:ListTargetsByRule",
    "events:ListTagsForResource",
    "events:TagResource",
    "events:UntagResource",
]


def _allow(sid: str, actions: list[str], resources, condition: dict | None = None) -> dict:
    st = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        st["Condition"] = condition
    return st


def boundary_self_protection(s: StackScope) -> list[dict]:
    """Nobody holding these policies may edit, replace or detach the boundary."""
    return [
        {
            "Sid": "DenyBoundaryChanges",
            "Effect": "Deny",
            "Resource": s.boundary_arn,
            "Action": [
                "iam:CreatePolicyVersion",
                "iam:DeletePolicy",
                "iam:DeletePolicyVersion",
                "iam:SetDefaultPolicyVersion",
                "iam:TagPolicy",
                "iam:UntagPolicy",
            ],
        },
        {
            "Sid": "DenyBoundaryRemoval",
            "Effect": "Deny",
            "Resource": "*",
            "Action": ["iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"],
        },
    ]


def deploy_policy(s: StackScope) -> dict:
    """What `pulumi up` of one stack needs, on that stack's resources only.

    Explicit actions per service; resources by the stack's names (export-<stack>-..., the configured
    bucket and its audit bucket, role path /cosmos-s3-export/<stack>/) or, where an ARN carries no name
    (KMS keys, security groups, task definitions), by the stack tag. Every permission-changing role
    action requires this stack's boundary; the audit trail, its bucket and key cannot be deleted or stopped.
    """
    tag, own = naming.STACK_TAG, s.own_tag
    audit_bucket = f"arn:aws:s3:::{naming.audit_bucket_name(s.bucket)}"
    statements = [
        # --- IAM: the stack's roles, always under the boundary ---
        _allow(
            "RolePermissionsUnderBoundary",
            ["iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary"],
            s.roles,
            {"ArnEquals": {"iam:PermissionsBoundary": s.boundary_arn}},
        ),
        _allow("RoleLifecycle", ROLE_READ + ROLE_LIFECYCLE, s.roles),
        _allow(
            "PassRolesToTheirServices",
            ["iam:PassRole"],
            s.roles,
            {"StringEquals": {"iam:PassedToService": ["ecs-tasks.amazonaws.com", "scheduler.amazonaws.com"]}},
        ),
        _allow(
            "EcsServiceLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            f"arn:aws:iam::{s.account_id}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS*",
            {"StringEquals": {"iam:AWSServiceName": "ecs.amazonaws.com"}},
        ),
        *boundary_self_protection(s),
        # The deployer sets the roles' trust; it may never become one of them.
        {
            "Sid": "DenyAssumingProgramRoles",
            "Effect": "Deny",
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Resource": f"arn:aws:iam::{s.account_id}:role{naming.ROLE_PATH_ROOT}*",
        },
        # --- S3: the export bucket and the audit bucket, configuration only (no object access) ---
        _allow("BucketConfiguration", S3_BUCKET_READ + S3_BUCKET_WRITE, s.buckets),
        _allow("DeleteExportBucketPolicy", ["s3:DeleteBucketPolicy", "s3:DeleteBucket"], f"arn:aws:s3:::{s.bucket}"),
        # --- KMS: keys carrying this stack's tag ---
        _allow(
            "CreateTaggedKeys",
            ["kms:CreateKey"],
            "*",
            {"StringEquals": s.request_tag, "ForAllValues:StringEquals": {"aws:TagKeys": [tag, naming.PURPOSE_TAG]}},
        ),
        # Tag-on-create: only keys no stack owns yet can get this stack's tag.
        _allow(
            "TagNewKeys",
            ["kms:TagResource"],
            s.arn("kms", "key/*"),
            {"StringEquals": s.request_tag, "Null": {f"aws:ResourceTag/{tag}": "true"}},
        ),
        _allow("ManageOwnKeys", KMS_KEY_READ + KMS_KEY_ADMIN, s.arn("kms", "key/*"), {"StringEquals": own}),
        # Other tags may change; the stack and purpose tags stay as created.
        _allow(
            "RetagOwnKeys",
            ["kms:TagResource", "kms:UntagResource"],
            s.arn("kms", "key/*"),
            {"StringEquals": own, "ForAllValues:StringNotEquals": {"aws:TagKeys": [tag, naming.PURPOSE_TAG]}},
        ),
        _allow(
            "OwnKeyAliases",
            ["kms:CreateAlias", "kms:DeleteAlias"],
            [s.arn("kms", f"alias/{s.bucket}"), s.arn("kms", f"alias/{naming.audit_bucket_name(s.bucket)}")],
        ),
        {
            "Sid": "DenyAuditKeyDeletion",
            "Effect": "Deny",
            "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey"],
            "Resource": s.arn("kms", "key/*"),
            "Condition": {"StringEquals": {f"aws:ResourceTag/{naming.PURPOSE_TAG}": "audit"}},
        },
        # ECR repositories with KMS encryption take a grant on the AWS-managed aws/ecr key, and no other key.
        _allow(
            "EcrRepositoryEncryptionGrant",
            ["kms:CreateGrant"],
            s.arn("kms", "key/*"),
            {
                "StringEquals": {"kms:ViaService": f"ecr.{s.region}.amazonaws.com"},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
                "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/aws/ecr"},
            },
        ),
        _allow(
            "EcrRepositoryEncryptionKey",
            ["kms:DescribeKey", "kms:RetireGrant"],
            s.arn("kms", "key/*"),
            {
                "StringEquals": {"kms:ViaService": f"ecr.{s.region}.amazonaws.com"},
                "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/aws/ecr"},
            },
        ),
        # --- CloudTrail: the audit trail; never deleted or stopped by the deployer ---
        _allow(
            "AuditTrail",
            [
                "cloudtrail:CreateTrail",
                "cloudtrail:UpdateTrail",
                "cloudtrail:StartLogging",
                "cloudtrail:GetTrail",
                "cloudtrail:GetTrailStatus",
                "cloudtrail:GetEventSelectors",
                "cloudtrail:PutEventSelectors",
                "cloudtrail:GetInsightSelectors",
                "cloudtrail:AddTags",
                "cloudtrail:RemoveTags",
                "cloudtrail:ListTags",
            ],
            s.arn("cloudtrail", f"trail/{naming.trail_name(s.bucket)}"),
        ),
        # --- The worker: image repository, logs, cluster, task definition, network, schedule ---
        _allow(
            "WorkerImageRepository",
            [
                "ecr:CreateRepository",
                "ecr:DeleteRepository",
                "ecr:DescribeRepositories",
                "ecr:PutImageScanningConfiguration",
                "ecr:PutImageTagMutability",
                "ecr:GetLifecyclePolicy",
                "ecr:GetRepositoryPolicy",
                "ecr:ListTagsForResource",
                "ecr:DescribeImages",
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            s.arn("ecr", f"repository/{s.named}*"),
        ),
        _allow(
            "WorkerLogGroup",
            [
                "logs:CreateLogGroup",
                "logs:DeleteLogGroup",
                "logs:PutRetentionPolicy",
                "logs:DeleteRetentionPolicy",
                "logs:ListTagsForResource",
                "logs:ListTagsLogGroup",
            ],
            [s.arn("logs", f"log-group:{s.named}*")],
        ),
        _allow(
            "WorkerCluster",
            [
                "ecs:CreateCluster",
                "ecs:DeleteCluster",
                "ecs:DescribeClusters",
                "ecs:UpdateCluster",
                "ecs:UpdateClusterSettings",
                "ecs:ListTagsForResource",
            ],
            s.arn("ecs", f"cluster/{s.named}*"),
        ),
        _allow("RegisterTaggedTaskDefinitions", ["ecs:RegisterTaskDefinition"], "*", {"StringEquals": s.request_tag}),
        _allow(
            "TagOwnTaskDefinitions",
            ["ecs:TagResource"],
            s.arn("ecs", f"task-definition/{naming.prefix(s.stack)}:*"),
            {"StringEquals": s.request_tag},
        ),
        _allow(
            "ReadOwnTaskDefinitionTags",
            ["ecs:ListTagsForResource"],
            s.arn("ecs", f"task-definition/{naming.prefix(s.stack)}:*"),
        ),
        # aws:RequestTag is the request's, so it holds for both resources the call names.
        _allow(
            "CreateTaggedSecurityGroupInTheStackVpc",
            ["ec2:CreateSecurityGroup"],
            [s.arn("ec2", f"vpc/{s.vpc_id}"), s.arn("ec2", "security-group/*")],
            {"StringEquals": s.request_tag},
        ),
        _allow(
            "TagSecurityGroupOnCreate",
            ["ec2:CreateTags"],
            s.arn("ec2", "security-group/*"),
            {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup", **s.request_tag}},
        ),
        _allow(
            "ManageOwnSecurityGroup",
            ["ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress"],
            s.arn("ec2", "security-group/*"),
            {"StringEquals": own},
        ),
        _allow(
            "ScheduleDeadLetterQueue",
            [
                "sqs:CreateQueue",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:SetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ListQueueTags",
            ],
            s.arn("sqs", f"{s.named}*"),
        ),
        _allow(
            "WorkerSchedule",
            [
                "scheduler:CreateSchedule",
                "scheduler:UpdateSchedule",
                "scheduler:DeleteSchedule",
                "scheduler:GetSchedule",
            ],
            s.arn("scheduler", f"schedule/default/{s.named}*"),
        ),
        # --- Alerting (components/alerting.py): topic and subscriptions, alarms, the task-failed rule, dashboard ---
        _allow("AlertTopic", SNS_MANAGE, s.arn("sns", f"{s.named}*")),
        _allow("Alarms", CLOUDWATCH_ALARMS_MANAGE, s.arn("cloudwatch", f"alarm:{s.named}*")),
        _allow(
            "Dashboard",
            ["cloudwatch:PutDashboard", "cloudwatch:GetDashboard", "cloudwatch:DeleteDashboards"],
            f"arn:aws:cloudwatch::{s.account_id}:dashboard/{s.named}*",
        ),
        _allow("TaskFailedRule", EVENTS_MANAGE, s.arn("events", f"rule/{s.named}*")),
        # --- Analytics (components/analytics.py): the Glue catalog and the Athena workgroup ---
        _allow("AnalyticsCatalog", GLUE_MANAGE, analytics_glue(s)),
        _allow("AnalyticsWorkgroup", ATHENA_MANAGE, analytics_workgroup(s)),
        # --- Read-only calls AWS authorises only on "*" ---
        _allow("AccountLevelReads", sorted(ACCOUNT_READS | {"ecr:GetAuthorizationToken"}), "*"),
        _allow(
            "DeregisterTaskDefinitions",
            ["ecs:DeregisterTaskDefinition"],
            "*",
            {"StringEquals": {"aws:RequestedRegion": s.region}},
        ),
    ]
    if s.create_federation:
        statements.append(_allow("EnableOutboundFederation", ["iam:EnableOutboundWebIdentityFederation"], "*"))
    if s.fan_out:
        statements += [
            _allow("FanOutStateMachine", STATES_MANAGE, s.state_machine),
            # CreateStateMachine/UpdateStateMachine pass the machine its role: that role, to Step Functions only.
            _allow(
                "PassFanOutRoleToStepFunctions",
                ["iam:PassRole"],
                s.fan_out_role,
                {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}},
            ),
        ]
    if s.force_destroy:
        # forceDestroy empties the export bucket on `pulumi destroy`: deletes, never reads (the bucket
        # policy lists this role among the deleters only on such stacks).
        statements.append(
            _allow(
                "EmptyExportBucketOnDestroy",
                ["s3:ListBucketVersions", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                [f"arn:aws:s3:::{s.bucket}", f"arn:aws:s3:::{s.bucket}/*"],
            )
        )
    statements.append(
        {
            "Sid": "DenyAuditTrailDestruction",
            "Effect": "Deny",
            "Action": [
                "s3:DeleteBucket",
                "s3:DeleteBucketPolicy",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "cloudtrail:DeleteTrail",
                "cloudtrail:StopLogging",
            ],
            "Resource": [
                audit_bucket,
                f"{audit_bucket}/*",
                s.arn("cloudtrail", f"trail/{naming.trail_name(s.bucket)}"),
            ],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


#: The program's task definition families: export-<stack>, -snapshot (snapshotSchedule), -restore (restore).
TASK_FAMILY_SUFFIXES = ("", "-snapshot", "-restore")


#: The analytics catalog: Glue database and tables, Athena workgroup (components/analytics.py).
GLUE_READ = GLUE_READ_ACTIONS
GLUE_MANAGE = sorted(
    {*GLUE_READ, "glue:CreateDatabase", "glue:UpdateDatabase", "glue:DeleteDatabase", "glue:CreateTable"}
    | {"glue:UpdateTable", "glue:DeleteTable", "glue:GetTags", "glue:TagResource", "glue:UntagResource"}
)
ATHENA_MANAGE = [
    "athena:CreateWorkGroup",
    "athena:DeleteWorkGroup",
    "athena:GetWorkGroup",
    "athena:ListTagsForResource",
    "athena:TagResource",
    "athena:UntagResource",
    "athena:UpdateWorkGroup",
]
#: What the analyst role does in Athena (the boundary's cap; its own policy takes the same list).
ATHENA_QUERY = ATHENA_QUERY_ACTIONS


def analytics_glue(s: StackScope) -> list[str]:
    """The Glue catalog (every database call names it), the stack's database and its tables."""
    database = f"cosmos_export_{s.stack}".lower().replace("-", "_")
    return [s.arn("glue", "catalog"), s.arn("glue", f"database/{database}"), s.arn("glue", f"table/{database}/*")]


def analytics_workgroup(s: StackScope) -> str:
    return s.arn("athena", f"workgroup/{naming.prefix(s.stack)}-analytics")


def boundary_policy(s: StackScope) -> dict:
    """The most any role of the stack may ever do, whatever its own policy says.

    The union of what the program's roles need (task, execution, scheduler; a restore role reads the
    export prefix and writes drills/ and restores/ in the same bucket; operator roles run, watch and stop
    the worker's tasks, read its logs and the export's state): objects of the export bucket,
    its key through S3 only, the Entra token, the worker's image, logs, task and dead-letter queue.
    No IAM, no bucket or key configuration, nothing of another stack.
    """
    bucket = f"arn:aws:s3:::{s.bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            # GetBucketLocation: Athena asks it before reading a table for the analyst role.
            _allow(
                "ExportBucketList", ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"], bucket
            ),
            _allow("AnalyticsCatalogRead", GLUE_READ, analytics_glue(s)),
            _allow("AnalyticsQueries", ATHENA_QUERY, analytics_workgroup(s)),
            _allow(
                "ExportObjects",
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                    "s3:GetObjectTagging",
                    "s3:PutObjectTagging",
                    "s3:GetObjectVersionTagging",
                    "s3:PutObjectVersionTagging",
                    "s3:DeleteObject",
                ],
                f"{bucket}/*",
            ),
            _allow(
                "ExportKeyThroughS3",
                ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                s.arn("kms", "key/*"),
                {"StringEquals": {"kms:ViaService": f"s3.{s.region}.amazonaws.com", **s.own_tag}},
            ),
            _allow(
                "AzureFederationToken",
                ["sts:GetWebIdentityToken"],
                "*",
                {
                    "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": [contract.TOKEN_EXCHANGE_AUDIENCE]},
                    "StringEquals": {"sts:SigningAlgorithm": contract.SIGNING_ALGORITHM},
                },
            ),
            _allow(
                "PullWorkerImage",
                ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                s.arn("ecr", f"repository/{s.named}*"),
            ),
            _allow("EcrAuth", ["ecr:GetAuthorizationToken"], "*"),
            _allow(
                "WorkerLogs",
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                s.arn("logs", f"log-group:{s.named}*:log-stream:*"),
            ),
            _allow(
                "RunWorkerTask",
                ["ecs:RunTask"],
                # The export, snapshot and restore/drill families (any revision), of this stack only.
                [
                    s.arn("ecs", f"task-definition/{naming.prefix(s.stack)}{suffix}:*")
                    for suffix in TASK_FAMILY_SUFFIXES
                ],
                {"ArnLike": {"ecs:cluster": s.arn("ecs", f"cluster/{s.named}*")}},
            ),
            # Operator roles (components/operators.py) watch and stop the tasks they start.
            _allow(
                "WatchWorkerTasks",
                ["ecs:DescribeTasks", "ecs:StopTask"],
                s.arn("ecs", f"task/{s.named}*"),
                {"ArnLike": {"ecs:cluster": s.arn("ecs", f"cluster/{s.named}*")}},
            ),
            _allow(
                "ReadWorkerLogs",
                ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"],
                [s.arn("logs", f"log-group:{s.named}*"), s.arn("logs", f"log-group:{s.named}*:log-stream:*")],
            ),
            _allow(
                "PassWorkerRoles",
                ["iam:PassRole"],
                s.roles,
                {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            _allow("DeadLetters", ["sqs:SendMessage"], s.arn("sqs", f"{s.named}*")),
            *(fan_out_boundary(s) if s.fan_out else []),
            *boundary_self_protection(s),
        ],
    }


def fan_out_boundary(s: StackScope) -> list[dict]:
    """What the fan-out role and the scheduler need beyond the worker's caps above (which already hold
    RunTask of the export family, DescribeTasks/StopTask, PassRole to ECS, GetObject and the key via S3):
    start this one machine (the scheduler; the machine itself for its Distributed Map), watch and stop its
    executions, and the EventBridge rule Step Functions keeps for `.sync` ECS tasks."""
    return [
        _allow("StartFanOut", ["states:StartExecution"], s.state_machine),
        _allow(
            "WatchFanOutExecutions", ["states:DescribeExecution", "states:StopExecution"], s.state_machine_executions
        ),
        _allow(
            "EcsTaskStateEvents",
            ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            s.arn("events", f"rule/{ECS_SYNC_RULE}"),
        ),
    ]


def preview_policy(s: StackScope) -> dict:
    """Read-only for `pulumi preview` of one stack: the configuration of its resources, no object reads."""
    bucket_reads = [a for a in S3_BUCKET_READ if a != "s3:ListBucket"]  # ListBucket lists object keys
    return {
        "Version": "2012-10-17",
        "Statement": [
            _allow("ReadRoles", ROLE_READ, s.roles),
            _allow("ReadAnalyticsCatalog", GLUE_READ + ["glue:GetTags"], analytics_glue(s)),
            _allow(
                "ReadAnalyticsWorkgroup", ["athena:GetWorkGroup", "athena:ListTagsForResource"], analytics_workgroup(s)
            ),
            _allow("ReadBucketConfiguration", bucket_reads, s.buckets),
            _allow("ReadOwnKeys", KMS_KEY_READ, s.arn("kms", "key/*"), {"StringEquals": s.own_tag}),
            _allow(
                "ReadAuditTrail",
                [
                    "cloudtrail:GetTrail",
                    "cloudtrail:GetTrailStatus",
                    "cloudtrail:GetEventSelectors",
                    "cloudtrail:GetInsightSelectors",
                    "cloudtrail:ListTags",
                ],
                s.arn("cloudtrail", f"trail/{naming.trail_name(s.bucket)}"),
            ),
            _allow(
                "ReadWorkerResources",
                [
                    "ecr:DescribeRepositories",
                    "ecr:GetLifecyclePolicy",
                    "ecr:GetRepositoryPolicy",
                    "ecr:ListTagsForResource",
                ],
                s.arn("ecr", f"repository/{s.named}*"),
            ),
            _allow(
                "ReadLogGroup",
                ["logs:ListTagsForResource", "logs:ListTagsLogGroup"],
                s.arn("logs", f"log-group:{s.named}*"),
            ),
            _allow(
                "ReadCluster", ["ecs:DescribeClusters", "ecs:ListTagsForResource"], s.arn("ecs", f"cluster/{s.named}*")
            ),
            _allow(
                "ReadQueue",
                ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags"],
                s.arn("sqs", f"{s.named}*"),
            ),
            _allow("ReadSchedule", ["scheduler:GetSchedule"], s.arn("scheduler", f"schedule/default/{s.named}*")),
            _allow(
                "ReadAlertTopic",
                ["sns:GetTopicAttributes", "sns:GetSubscriptionAttributes", "sns:ListTagsForResource"],
                s.arn("sns", f"{s.named}*"),
            ),
            _allow(
                "ReadAlarms",
                ["cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource"],
                s.arn("cloudwatch", f"alarm:{s.named}*"),
            ),
            _allow(
                "ReadDashboard", ["cloudwatch:GetDashboard"], f"arn:aws:cloudwatch::{s.account_id}:dashboard/{s.named}*"
            ),
            _allow(
                "ReadTaskFailedRule",
                ["events:DescribeRule", "events:ListTargetsByRule", "events:ListTagsForResource"],
                s.arn("events", f"rule/{s.named}*"),
            ),
            *([_allow("ReadFanOutStateMachine", STATES_READ, s.state_machine)] if s.fan_out else []),
            _allow("AccountLevelReads", sorted(ACCOUNT_READS), "*"),
        ],
    }


#: Azure actions of the deployer on the one Cosmos account (assigned at the account, not the group):
#: the worker's (and restore's) SQL role definitions and assignments, the request-log diagnostic
#: setting. No delete of diagnostic settings: the request logs outlive the stack (retained on destroy).
AZURE_ACCOUNT_ACTIONS = [
    "Microsoft.DocumentDB/databaseAccounts/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/write",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/delete",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/write",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/delete",
    "Microsoft.Insights/diagnosticSettings/read",
    "Microsoft.Insights/diagnosticSettings/write",
]
#: On the Log Analytics workspace: read (to send the diagnostic setting there) and, where the program
#: creates the workspace, write at the resource group. Never delete, never its shared keys.
AZURE_WORKSPACE_READ = ["Microsoft.OperationalInsights/workspaces/read"]
AZURE_WORKSPACE_CREATE = [
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/write",
]
#: Never: account keys or connection strings (the worker uses none), the workspace's shared keys.
AZURE_DEPLOY_NOT_ACTIONS = [
    "Microsoft.DocumentDB/databaseAccounts/listKeys/action",
    "Microsoft.DocumentDB/databaseAccounts/readonlykeys/action",
    "Microsoft.DocumentDB/databaseAccounts/listConnectionStrings/action",
    "Microsoft.DocumentDB/databaseAccounts/regenerateKey/action",
    "Microsoft.OperationalInsights/workspaces/sharedKeys/action",
]


@dataclass(frozen=True)
class AzureScope:
    """Where the Azure deployer acts: the Cosmos account and the request-log workspace."""

    account_id: str
    #: The workspace the stack names (logAnalyticsWorkspaceId), or None: the program creates one in the group.
    workspace_id: str | None
    resource_group_id: str

    @property
    def workspace_scope(self) -> str:
        return self.workspace_id or self.resource_group_id

    @property
    def workspace_actions(self) -> list[str]:
        return AZURE_WORKSPACE_READ if self.workspace_id else AZURE_WORKSPACE_CREATE


def azure_scope_of(config: "BootstrapConfig") -> AzureScope:
    c = program_stack_config(config.environment)
    rg = config.azure_resource_group_id
    if rg.rsplit("/", 1)[1].lower() != c.cosmos.cosmos_resource_group.lower():
        raise BootstrapConfigError(
            f"cosmos-s3-export-bootstrap:azureResourceGroupId={rg!r} is not the group of the Cosmos account "
            f"(stacks/Pulumi.{config.environment}.yaml cosmosResourceGroup={c.cosmos.cosmos_resource_group!r}): use "
            f"/subscriptions/{config.subscription_id}/resourceGroups/{c.cosmos.cosmos_resource_group}"
        )
    return AzureScope(
        account_id=f"{rg}/providers/Microsoft.DocumentDB/databaseAccounts/{c.cosmos.cosmos_account_name}",
        workspace_id=c.cosmos.log_analytics_workspace_id,
        resource_group_id=rg,
    )


#: Built-in Azure "Reader" role (previews).
AZURE_READER_ROLE = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
#: Microsoft Graph and its application permission Application.ReadWrite.OwnedBy: the deployer
#: may manage only the Entra applications it owns (the worker's), nothing else in the tenant.
MS_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_APPLICATION_READWRITE_OWNEDBY = "18a4783c-866b-4cc7-a460-3d5e5662c884"
ENTRA_AUDIENCE = contract.TOKEN_EXCHANGE_AUDIENCE
