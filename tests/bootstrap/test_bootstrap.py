"""The bootstrap program under mocks, for every bootstrap stack file: trust pinned to repo + environment,
deployer policies that cannot escalate or reach another stack's resources."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import sys
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"
sys.path.insert(0, str(BOOTSTRAP))

import deployer as d  # noqa: E402
import mocked  # noqa: E402
from mocked import ACCOUNTS, STACKS, config_of, of  # noqa: E402

from components import naming  # noqa: E402
from sandbox import mocked_stack  # noqa: E402

# Each run takes ~0.5 s; results are read, never changed.
run = functools.lru_cache(maxsize=None)(mocked.run)
run_stack = functools.lru_cache(maxsize=None)(mocked_stack.run_stack)

ACCOUNT = "111122223333"  # dev and staging (shared); prod has its own


def policy_of(registered, role: str) -> dict:
    (policy,) = [p for n, p in of(registered, "aws:iam/rolePolicy:RolePolicy") if n == f"{role}-policy"]
    return json.loads(policy["policy"])


def boundary_of(registered) -> dict:
    (boundary,) = [p for _, p in of(registered, "aws:iam/policy:Policy")]
    return boundary


def _list(v):
    return v if isinstance(v, list) else [v]


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
        assert statement["Principal"] == {
            "Federated": f"arn:aws:iam::{ACCOUNTS[stack]}:oidc-provider/token.actions.githubusercontent.com"
        }
        assert statement["Condition"] == {
            "StringEquals": {
                "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                "token.actions.githubusercontent.com:sub": f"repo:acme/cosmos-s3-export:environment:{stack}{suffix}",
            }
        }
        assert "*" not in json.dumps(statement["Condition"])


@pytest.mark.parametrize("stack", STACKS)
def test_entra_credentials_pinned_and_no_secret(stack):
    registered = run(stack)
    fics = sorted(
        (p["subject"], p["issuer"], tuple(p["audiences"]))
        for _, p in of(
            registered, "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
        )
    )
    assert fics == [
        (
            f"repo:acme/cosmos-s3-export:environment:{stack}",
            "https://token.actions.githubusercontent.com",
            ("api://AzureADTokenExchange",),
        ),
        (
            f"repo:acme/cosmos-s3-export:environment:{stack}-preview",
            "https://token.actions.githubusercontent.com",
            ("api://AzureADTokenExchange",),
        ),
    ]
    types = {t for t, _, _ in registered}
    assert not types & {
        "azuread:index/applicationPassword:ApplicationPassword",
        "aws:iam/accessKey:AccessKey",
        "azuread:index/applicationCertificate:ApplicationCertificate",
    }


@pytest.mark.parametrize("stack", STACKS)
def test_azure_deployer_is_scoped_to_the_cosmos_account_and_log_workspace(stack):
    registered = run(stack)
    rg = config_of(stack).azure_resource_group_id
    program = d.program_stack_config(stack)
    account = f"{rg}/providers/Microsoft.DocumentDB/databaseAccounts/{program.cosmos.cosmos_account_name}"
    workspace = (
        program.cosmos.log_analytics_workspace_id or rg
    )  # prod names a workspace; dev/staging create one in the group
    assignments = dict(of(registered, "azure-native:authorization:RoleAssignment"))
    assert {n: (a["scope"], a["principalId"]) for n, a in assignments.items()} == {
        f"gh-{stack}-deployer-account-assignment": (account, f"gh-{stack}-deployer-sp-object"),
        f"gh-{stack}-deployer-workspace-assignment": (workspace, f"gh-{stack}-deployer-sp-object"),
        f"gh-{stack}-previewer-account-assignment": (account, f"gh-{stack}-previewer-sp-object"),
        f"gh-{stack}-previewer-workspace-assignment": (workspace, f"gh-{stack}-previewer-sp-object"),
    }
    definitions = dict(of(registered, "azure-native:authorization:RoleDefinition"))
    assert definitions[f"gh-{stack}-deployer-account-role"]["assignableScopes"] == [account]
    assert definitions[f"gh-{stack}-deployer-workspace-role"]["assignableScopes"] == [workspace]
    for definition in definitions.values():
        (permissions,) = definition["permissions"]
        assert "Microsoft.DocumentDB/databaseAccounts/listKeys/action" in permissions["notActions"]
        for action in permissions["actions"]:
            # Explicit actions only; no delete of logs; nothing of Microsoft.Authorization.
            assert "*" not in action and not action.startswith("Microsoft.Authorization"), action
            assert not (action.endswith("/delete") and ("diagnosticSettings" in action or "workspaces" in action)), (
                action
            )
    workspace_actions = definitions[f"gh-{stack}-deployer-workspace-role"]["permissions"][0]["actions"]
    assert ("Microsoft.OperationalInsights/workspaces/write" in workspace_actions) == (
        program.cosmos.log_analytics_workspace_id is None
    )


def test_bootstrap_refuses_a_resource_group_that_is_not_the_cosmos_accounts():
    bad = d.BootstrapConfig(
        **{**GOOD, "azure_resource_group_id": GOOD["azure_resource_group_id"].replace("rg-orders-dev", "rg-other")}
    )
    with pytest.raises(
        d.BootstrapConfigError,
        match=r"azureResourceGroupId=.*rg-other.* is not the group of the Cosmos "
        r"account \(stacks/Pulumi.dev.yaml cosmosResourceGroup='rg-orders-dev'\)",
    ):
        d.azure_scope_of(bad)


def test_staging_adopts_the_shared_account_provider_dev_creates():
    assert len(of(run("dev"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider")) == 1
    assert of(run("staging"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    [(_, provider)] = of(run("prod"), "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider["url"] == "https://token.actions.githubusercontent.com"
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]


def _documents(stack: str) -> dict[str, dict]:
    registered = run(stack)
    return {
        "deploy": policy_of(registered, f"gh-{stack}-deploy"),
        "preview": policy_of(registered, f"gh-{stack}-preview"),
        "boundary": json.loads(boundary_of(registered)["policy"]),
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_permission_changing_role_statement_requires_the_boundary(stack):
    boundary = naming.boundary_arn(ACCOUNTS[stack], stack)
    assert boundary_of(run(stack))["name"] == f"cosmos-s3-export-{stack}-boundary"
    found = 0
    for kind, doc in _documents(stack).items():
        for st in doc["Statement"]:
            if st["Effect"] == "Allow" and set(_list(st["Action"])) & d.BOUNDARY_CONDITIONED_ACTIONS:
                found += 1
                assert st["Condition"] == {"ArnEquals": {"iam:PermissionsBoundary": boundary}}, (kind, st["Sid"])
                assert st["Resource"] == f"arn:aws:iam::{ACCOUNTS[stack]}:role/cosmos-s3-export/{stack}/*"
    assert found == 1  # the deployer's, and only its
    deploy = _documents(stack)["deploy"]
    assert (
        "iam:CreateRole" in next(s for s in deploy["Statement"] if s["Sid"] == "RolePermissionsUnderBoundary")["Action"]
    )
    granted = {a for s in deploy["Statement"] if s["Effect"] == "Allow" for a in _list(s["Action"])}
    assert not granted & {
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:DeleteRolePermissionsBoundary",
        "iam:CreatePolicy",
        "iam:CreatePolicyVersion",
        "iam:CreateUser",
        "iam:CreateAccessKey",
    }


@pytest.mark.parametrize("stack", STACKS)
def test_no_service_wide_or_wildcard_action(stack):
    for kind, doc in [*_documents(stack).items(), *_built(_scope(stack)).items()]:
        for st in doc["Statement"]:
            for action in _list(st["Action"]):
                assert "*" not in action, (kind, st["Sid"], action)
                assert action.split(":")[0] in {
                    "iam",
                    "sts",
                    "s3",
                    "kms",
                    "ecr",
                    "ecs",
                    "logs",
                    "ec2",
                    "sqs",
                    "scheduler",
                    "cloudtrail",
                    "sns",
                    "cloudwatch",
                    "events",
                    "glue",
                    "athena",
                    "states",
                }, action


def _scoped(resource: str, stack: str, scope: d.StackScope) -> bool:
    """An ARN that names this stack: its role path, 'export-<stack>-' names, its buckets, trail, boundary."""
    return (
        f"/cosmos-s3-export/{stack}/" in resource
        or f":export-{stack}-" in resource
        or f"/export-{stack}-" in resource
        or f"/export-{stack}:" in resource
        or resource in scope.buckets
        or resource.rstrip("/*") in scope.buckets
        or resource.endswith(
            (
                f"trail/{naming.trail_name(scope.bucket)}",
                f"alias/{scope.bucket}",
                f"alias/{naming.audit_bucket_name(scope.bucket)}",
                f"vpc/{scope.vpc_id}",
            )
        )
        or resource == scope.boundary_arn
        # The analytics catalog: Glue names allow no '-' (cosmos_export_<stack>); every Glue call names the catalog.
        or f":database/cosmos_export_{stack}" in resource
        or f":table/cosmos_export_{stack}/" in resource
        or (resource.startswith("arn:aws:glue:") and resource.endswith(f":{scope.account_id}:catalog"))
        or resource == f"arn:aws:iam::{scope.account_id}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS*"
        # fanOut: the one rule Step Functions keeps per account for `.sync` ECS tasks (the boundary only).
        or resource == scope.arn("events", "rule/StepFunctionsGetEventsForECSTaskRule")
    )


def _tag_conditioned(st: dict) -> bool:
    conditions = {k for c in (st.get("Condition") or {}).values() for k in c}
    return bool(
        conditions
        & {
            f"aws:ResourceTag/{naming.STACK_TAG}",
            f"aws:RequestTag/{naming.STACK_TAG}",
            "kms:ViaService",
            "aws:RequestedRegion",
        }
    )


@pytest.mark.parametrize("stack", STACKS)
def test_every_allowed_resource_is_scoped_to_the_stack(stack):
    scope = d.scope_of(ACCOUNTS[stack], "eu-central-1" if stack == "prod" else "eu-west-1", stack)
    for kind, doc in [*_documents(stack).items(), *_built(_scope(stack)).items()]:
        for st in doc["Statement"]:
            if st["Effect"] != "Allow":
                continue
            for resource in _list(st["Resource"]):
                if resource == "*":
                    assert set(_list(st["Action"])) <= d.STAR_ONLY_ACTIONS or _tag_conditioned(st), (kind, st["Sid"])
                elif not _scoped(resource, stack, scope):
                    # A name-less ARN (key/*, security-group/*): only with this stack's tag (or via a service).
                    assert _tag_conditioned(st), (kind, st["Sid"], resource)


@pytest.mark.parametrize("stack", STACKS)
def test_the_boundary_and_the_deployer_deny_changing_the_boundary(stack):
    boundary_arn = naming.boundary_arn(ACCOUNTS[stack], stack)
    for kind in ("deploy", "boundary"):
        denies = [st for st in _documents(stack)[kind]["Statement"] if st["Effect"] == "Deny"]
        on_boundary = {a for st in denies if boundary_arn in _list(st["Resource"]) for a in _list(st["Action"])}
        assert {
            "iam:CreatePolicyVersion",
            "iam:SetDefaultPolicyVersion",
            "iam:DeletePolicy",
            "iam:DeletePolicyVersion",
        } <= on_boundary, kind
        anywhere = {a for st in denies if st["Resource"] == "*" for a in _list(st["Action"])}
        assert "iam:DeleteRolePermissionsBoundary" in anywhere, kind


@pytest.mark.parametrize("stack", STACKS)
def test_the_deployer_can_never_assume_the_roles_it_defines(stack):
    deploy = _documents(stack)["deploy"]
    (deny,) = [st for st in deploy["Statement"] if st["Sid"] == "DenyAssumingProgramRoles"]
    assert deny["Effect"] == "Deny" and "sts:AssumeRole" in deny["Action"]
    assert deny["Resource"] == f"arn:aws:iam::{ACCOUNTS[stack]}:role/cosmos-s3-export/*"


def test_the_boundary_caps_what_the_program_roles_are_given():
    """Every action the program's roles are granted is inside the boundary (or a role would fail at run time)."""
    boundary = _documents("dev")["boundary"]
    capped = {a for st in boundary["Statement"] if st["Effect"] == "Allow" for a in _list(st["Action"])}
    program = run_stack("dev")
    granted = {
        a
        for p in program.of_type("aws:iam/rolePolicy:RolePolicy")
        for st in json.loads(p.inputs["policy"])["Statement"]
        for a in _list(st["Action"])
    }
    assert granted <= capped, granted - capped
    assert not {a for a in capped if a.startswith("iam:") and a != "iam:PassRole"}


def _arn_matches(pattern: str, arn: str) -> bool:
    return fnmatch.fnmatchcase(arn, pattern)


def _resources_of(program) -> list[tuple[str, dict]]:
    """(ARN, tags) of every AWS resource the program declares, as the mocks return them."""
    out = []
    for r in program.resources:
        if r.custom and r.type_.startswith("aws:") and r.outputs.get("arn"):
            out.append((r.outputs["arn"], r.inputs.get("tags") or {}))
    return out


def _allows(st: dict, arn: str, tags: dict) -> bool:
    if st["Effect"] != "Allow" or not any(_arn_matches(p, arn) for p in _list(st["Resource"])):
        return False
    for op, keys in (st.get("Condition") or {}).items():
        for key, want in keys.items():
            if key == "kms:ResourceAliases" and all(str(a).startswith("alias/aws/") for a in _list(want)):
                return False  # AWS-managed keys only; the program's keys are customer managed
            if (
                key in (f"aws:ResourceTag/{naming.STACK_TAG}", f"aws:RequestTag/{naming.STACK_TAG}")
                and op == "StringEquals"
            ):
                if tags.get(naming.STACK_TAG) not in _list(want):
                    return False
    return True


def test_dev_deployer_touches_no_staging_resource_in_the_shared_account():
    assert ACCOUNTS["dev"] == ACCOUNTS["staging"]
    dev_docs = _documents("dev")
    staging = _resources_of(run_stack("staging"))
    dev = _resources_of(run_stack("dev"))
    assert len(staging) >= 15 and {a.split(":")[2] for a, _ in staging} >= {
        "iam",
        "s3",
        "kms",
        "ecr",
        "ecs",
        "logs",
        "sqs",
        "scheduler",
        "cloudtrail",
        "ec2",
    }
    for kind in ("deploy", "preview"):
        for arn, tags in staging:
            hits = [
                st["Sid"]
                for st in dev_docs[kind]["Statement"]
                if _allows(st, arn, tags) and not set(_list(st["Action"])) <= d.STAR_ONLY_ACTIONS
            ]
            assert hits == [], (kind, arn, hits)
    # The matcher is not blind: dev's deployer does reach every dev resource.
    unreached = [arn for arn, tags in dev if not any(_allows(st, arn, tags) for st in dev_docs["deploy"]["Statement"])]
    assert unreached == []
    # The staging role path and boundary are out of reach too (not only the resources that exist).
    assert not [
        st["Sid"]
        for st in dev_docs["deploy"]["Statement"]
        if _allows(st, f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/staging/anything", {})
        and not set(_list(st["Action"])) <= d.STAR_ONLY_ACTIONS
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_preview_role_is_read_only_and_reads_no_object(stack):
    preview = _documents(stack)["preview"]
    for st in preview["Statement"]:
        assert st["Effect"] == "Allow"
        for action in _list(st["Action"]):
            verb = action.split(":")[1]
            assert verb.startswith(("Get", "List", "Describe")), action
            assert not verb.startswith("GetObject") and action not in ("s3:ListBucket", "s3:ListBucketVersions"), action
        assert not any(r.endswith("/*") and r.startswith("arn:aws:s3") for r in _list(st["Resource"]))


def test_only_force_destroy_stacks_let_the_deployer_delete_exports():
    dev, prod = _documents("dev")["deploy"], _documents("prod")["deploy"]
    assert [
        st["Sid"]
        for st in dev["Statement"]
        if "s3:DeleteObjectVersion" in _list(st["Action"]) and st["Effect"] == "Allow"
    ] == ["EmptyExportBucketOnDestroy"]
    assert not [
        st for st in prod["Statement"] if "s3:DeleteObjectVersion" in _list(st["Action"]) and st["Effect"] == "Allow"
    ]
    for doc in (dev, prod):  # never an object read
        assert not any(
            a.startswith("s3:GetObject")
            for st in doc["Statement"]
            if st["Effect"] == "Allow"
            for a in _list(st["Action"])
        )


@pytest.mark.parametrize("stack", STACKS)
def test_the_deployer_cannot_destroy_the_audit_trail(stack):
    deploy = _documents(stack)["deploy"]
    (deny,) = [st for st in deploy["Statement"] if st["Sid"] == "DenyAuditTrailDestruction"]
    bucket = d.program_stack_config(stack).bucket.bucket_name
    assert {"s3:DeleteBucket", "s3:DeleteObjectVersion", "cloudtrail:DeleteTrail", "cloudtrail:StopLogging"} <= set(
        deny["Action"]
    )
    assert f"arn:aws:s3:::{bucket}-audit" in deny["Resource"] and f"arn:aws:s3:::{bucket}-audit/*" in deny["Resource"]
    (keys,) = [st for st in deploy["Statement"] if st["Sid"] == "DenyAuditKeyDeletion"]
    assert keys["Condition"] == {"StringEquals": {f"aws:ResourceTag/{naming.PURPOSE_TAG}": "audit"}}


def test_outbound_federation_is_enabled_only_by_the_stack_that_owns_it():
    for stack in STACKS:
        granted = {
            a for st in _documents(stack)["deploy"]["Statement"] for a in _list(st["Action"]) if st["Effect"] == "Allow"
        }
        owner = d.program_stack_config(stack).identity.federation == "create"
        assert ("iam:EnableOutboundWebIdentityFederation" in granted) == owner, stack


def test_service_linked_role_is_ecs_only():
    (st,) = [
        st for st in _documents("dev")["deploy"]["Statement"] if "iam:CreateServiceLinkedRole" in _list(st["Action"])
    ]
    assert st["Condition"] == {"StringEquals": {"iam:AWSServiceName": "ecs.amazonaws.com"}}


def test_wildcard_subject_is_refused():
    with pytest.raises(ValueError, match=r"subject 'repo:acme/\*:environment:dev' contains a wildcard"):
        d.github_trust_policy("arn:aws:iam::1:oidc-provider/x", "repo:acme/*:environment:dev")


GOOD = dict(
    github_org="acme",
    github_repo="cosmos-s3-export",
    environment="dev",
    azure_resource_group_id="/subscriptions/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/resourceGroups/rg-orders-dev",
)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("github_org", "acme/corp", "cosmos-s3-export-bootstrap:githubOrg='acme/corp' is not a GitHub organisation"),
        ("github_org", "*", "cosmos-s3-export-bootstrap:githubOrg='*' is not a GitHub organisation"),
        (
            "github_repo",
            "acme/cosmos-s3-export",
            "cosmos-s3-export-bootstrap:githubRepo='acme/cosmos-s3-export' is not a repository name",
        ),
        ("environment", "Prod", "cosmos-s3-export-bootstrap:environment='Prod' must be a lower-case stack name"),
        ("environment", "dev-preview", "cosmos-s3-export-bootstrap:environment='dev-preview' must be a lower-case"),
        (
            "environment",
            "qa",
            "cosmos-s3-export-bootstrap:environment='qa' has no stacks/Pulumi.qa.yaml; use one of ['dev', 'prod', 'staging']",
        ),
        (
            "azure_resource_group_id",
            "rg-orders-dev",
            "cosmos-s3-export-bootstrap:azureResourceGroupId='rg-orders-dev' is not /subscriptions/",
        ),
        (
            "oidc_provider_arn",
            "arn:aws:iam::111122223333:oidc-provider/*",
            "cosmos-s3-export-bootstrap:oidcProviderArn=",
        ),
    ],
)
def test_bad_config_is_refused_with_the_key_value_and_fix(field, value, message):
    with pytest.raises(d.BootstrapConfigError) as err:
        d.BootstrapConfig(**{**GOOD, field: value})
    assert str(err.value).startswith(message)


# --- fanOut (components/fan_out.py): every stack file has it off, so these build the documents directly ---


@functools.lru_cache(maxsize=None)
def fan_out_program():
    """dev with 50 shards: above 40 is the Distributed Map, the fan-out role's widest policy."""
    return mocked_stack.run_stack("dev", {"fanOut": {"maxShards": 50}})


def _scope(stack: str = "dev", fan_out: bool = True) -> d.StackScope:
    region = "eu-central-1" if stack == "prod" else "eu-west-1"
    return dataclasses.replace(d.scope_of(ACCOUNTS[stack], region, stack), fan_out=fan_out)


def _built(scope: d.StackScope) -> dict[str, dict]:
    return {"deploy": d.deploy_policy(scope), "preview": d.preview_policy(scope), "boundary": d.boundary_policy(scope)}


def _added_by_fan_out(kind: str) -> list[dict]:
    """The statements a fanOut stack's document has and the same stack without fanOut has not."""
    off, on = _built(_scope(fan_out=False))[kind]["Statement"], _built(_scope())[kind]["Statement"]
    assert [st for st in off if st not in on] == []  # fanOut only adds
    return [st for st in on if st not in off]


def test_the_built_documents_are_what_the_bootstrap_deploys():
    """The pure builders these tests call are what the bootstrap program registers (fanOut off on dev)."""
    assert _built(_scope(fan_out=False)) == _documents("dev")


def test_without_fan_out_nothing_of_step_functions_is_granted():
    for stack in STACKS:
        assert not d.scope_of(ACCOUNTS[stack], "eu-west-1", stack).fan_out, stack
        text = json.dumps(_documents(stack))
        assert "states:" not in text and "states.amazonaws.com" not in text, stack
        assert "StepFunctionsGetEventsForECSTaskRule" not in text, stack


def test_fan_out_deployer_manages_only_its_state_machine_and_passes_only_its_role_to_step_functions():
    machine = f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:export-dev-fan-out"
    assert _added_by_fan_out("deploy") == [
        {
            "Sid": "FanOutStateMachine",
            "Effect": "Allow",
            "Action": [
                "states:CreateStateMachine",
                "states:DeleteStateMachine",
                "states:DescribeStateMachine",
                "states:ListStateMachineVersions",
                "states:ListTagsForResource",
                "states:TagResource",
                "states:UntagResource",
                "states:UpdateStateMachine",
            ],
            "Resource": machine,
        },
        {
            "Sid": "PassFanOutRoleToStepFunctions",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/dev/export-dev-fan-out",
            "Condition": {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}},
        },
    ]
    # Nothing else of Step Functions anywhere in the deployer: no execution, no other machine.
    deploy = _built(_scope())["deploy"]["Statement"]
    assert [st["Sid"] for st in deploy if any(a.startswith("states:") for a in _list(st["Action"]))] == [
        "FanOutStateMachine"
    ]
    assert not {a for st in deploy for a in _list(st["Action"])} & {"states:StartExecution", "states:*"}
    assert [st["Sid"] for st in deploy if "states.amazonaws.com" in json.dumps(st.get("Condition"))] == [
        "PassFanOutRoleToStepFunctions"
    ]
    # The preview role reads the machine's configuration, never its executions.
    assert _added_by_fan_out("preview") == [
        {
            "Sid": "ReadFanOutStateMachine",
            "Effect": "Allow",
            "Action": ["states:DescribeStateMachine", "states:ListStateMachineVersions", "states:ListTagsForResource"],
            "Resource": machine,
        }
    ]


def test_fan_out_boundary_adds_only_the_machine_its_executions_and_the_ecs_sync_rule():
    assert _added_by_fan_out("boundary") == [
        {
            "Sid": "StartFanOut",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:export-dev-fan-out",
        },
        {
            "Sid": "WatchFanOutExecutions",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": f"arn:aws:states:eu-west-1:{ACCOUNT}:execution:export-dev-fan-out/*",
        },
        {
            # An account-wide name Step Functions owns (policies.ECS_SYNC_RULE): no stack prefix possible.
            "Sid": "EcsTaskStateEvents",
            "Effect": "Allow",
            "Action": ["events:DescribeRule", "events:PutRule", "events:PutTargets"],
            "Resource": f"arn:aws:events:eu-west-1:{ACCOUNT}:rule/StepFunctionsGetEventsForECSTaskRule",
        },
    ]


def _granted(program, role: str) -> list[tuple[str, str]]:
    (policy,) = [p for p in program.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role]
    return [
        (action, resource)
        for st in json.loads(policy.inputs["policy"])["Statement"]
        for action in _list(st["Action"])
        for resource in _list(st["Resource"])
    ]


def _task_states(definition: dict):
    for state in definition["States"].values():
        if state["Type"] == "Task" and state["Resource"].startswith("arn:aws:states:::ecs:"):
            yield state
        if state["Type"] == "Map":
            yield from _task_states(state["ItemProcessor"])


def test_the_fan_out_boundary_caps_what_the_fan_out_and_scheduler_roles_are_given():
    """Each (action, resource) of the fan-out role and of the scheduler is inside a boundary statement: a
    fanOut stack's roles would otherwise fail at run time. Checked on ARNs, not only on action names."""
    program = fan_out_program()
    boundary = [st for st in d.boundary_policy(_scope())["Statement"] if st["Effect"] == "Allow"]
    fan_out_role = _granted(program, "export-dev-fan-out")
    scheduler = _granted(program, "export-dev-scheduler")
    assert ("states:StartExecution", f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:export-dev-fan-out") in (
        scheduler
    )
    assert not [a for a, _ in scheduler if a.startswith("ecs:")]
    # The role policies also name the bare family ARN (as the single-task scheduler's always has); what the
    # machine runs is a revision (its definition's TaskDefinition), and that is what the boundary caps.
    family = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/export-dev"
    (machine,) = program.of_type("aws:sfn/stateMachine:StateMachine")
    runs = {s["Parameters"]["TaskDefinition"] for s in _task_states(json.loads(machine.inputs["definition"]))}
    assert len(runs) == 1 and next(iter(runs)).startswith(f"{family}:")
    checked = [(a, r) for a, r in fan_out_role + scheduler if r != family] + [("ecs:RunTask", r) for r in runs]
    for action, resource in checked:
        assert any(
            action in _list(st["Action"]) and any(_arn_matches(p, resource) for p in _list(st["Resource"]))
            for st in boundary
        ), (action, resource)
    # Without fanOut the boundary refuses them: the fan-out grants are not already there.
    off = [st for st in d.boundary_policy(_scope(fan_out=False))["Statement"] if st["Effect"] == "Allow"]
    assert not any("states:StartExecution" in _list(st["Action"]) for st in off)


def test_the_fan_out_deployer_reaches_its_machine_and_not_staging_s():
    # Statements on "*" (tag-on-create, account reads) name no resource: not what this is about.
    deploy = [st for st in d.deploy_policy(_scope())["Statement"] if st["Resource"] != "*"]
    dev = fan_out_program().named("aws:sfn/stateMachine:StateMachine", "export-dev-fan-out-state-machine")
    assert [st["Sid"] for st in deploy if _allows(st, dev.outputs["arn"], dev.inputs["tags"])] == ["FanOutStateMachine"]
    staging = f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:export-staging-fan-out"
    assert [st["Sid"] for st in deploy if _allows(st, staging, {naming.STACK_TAG: "staging"})] == []
    for doc in _built(_scope("staging")).values():  # and staging's documents name only staging's machine
        assert "export-dev-fan-out" not in json.dumps(doc)


def test_the_scanner_export_writes_every_policy_document(tmp_path):
    """tools/iam_documents.py (what parliament and policy_sentry read) writes each identity policy as built."""
    sys.path.insert(0, str(BOOTSTRAP.parent / "tools"))
    import iam_documents

    iam_documents.main(tmp_path)
    identity = sorted(p.name for p in (tmp_path / "identity").glob("*.json"))
    # Per stack: 5 program role policies (export task, execution, scheduler, restore task, restore scheduler),
    # deploy, preview, boundary; plus one per operator role (dev 2, prod 4, staging none) and analyst role
    # (dev and prod; staging has no analytics).
    assert len(identity) == 3 * 8 + 2 + 4 + 2
    assert "bootstrap-dev-Policy-gh-dev-boundary.json" in identity
    written = json.loads((tmp_path / "identity" / "bootstrap-dev-RolePolicy-gh-dev-deploy-policy.json").read_text())
    assert written == _documents("dev")["deploy"]
    assert len(list((tmp_path / "resource").glob("*Key-*.json"))) == 9  # export, audit and alerts key per stack
