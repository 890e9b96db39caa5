"""Whole program, every stacks/Pulumi.<stack>.yaml: the invariants that make the chain work and safe."""

from __future__ import annotations

import json
import re

from components import policies
from cosmos_export import contract
from cosmos_export.contract import Output
from sandbox.mocked_stack import run_stack

FIC = "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
ASSIGNMENT = "azure-native:cosmosdb:SqlResourceSqlRoleAssignment"
ROLE = "aws:iam/role:Role"


def test_fic_subject_is_task_role_arn_and_issuer_is_federation_issuer(every_stack):
    run = every_stack
    task_role = run.named(ROLE, f"export-{run.stack}-task")
    fic = run.named(FIC, f"export-{run.stack}-fic-ecs-task").inputs
    assert fic["subject"] == task_role.outputs["arn"] == run.outputs[contract.Output.TASK_ROLE_ARN]
    assert fic["issuer"] == run.outputs[contract.Output.ISSUER]
    assert re.match(contract.AWS_ISSUER_PATTERN, fic["issuer"])
    assert fic["audiences"] == [contract.TOKEN_EXCHANGE_AUDIENCE]
    app = run.named("azuread:index/application:Application", f"export-{run.stack}-app")
    assert fic["applicationId"] == app.outputs["id"]  # app.id, not client_id
    # The export app trusts the export task role only (the restore role has its own app).
    assert [f.inputs["subject"] for f in run.of_type(FIC) if f.inputs["applicationId"] == app.outputs["id"]] == [
        task_role.outputs["arn"]
    ]


def test_issuer_comes_from_the_federation_the_config_chose(every_stack):
    run = every_stack
    owned = run.of_type("aws:iam/outboundWebIdentityFederation:OutboundWebIdentityFederation")
    mode = json.loads(json.dumps(run.config.get("cosmos-s3-export:federation", "adopt")))
    assert len(owned) == (1 if mode == "create" else 0)
    if owned:
        assert owned[0].outputs["issuerIdentifier"] == run.outputs[contract.Output.ISSUER]


def test_every_cosmos_assignment_targets_the_sp_with_a_read_only_role(every_stack):
    run = every_stack
    sp = run.named("azuread:index/servicePrincipal:ServicePrincipal", f"export-{run.stack}-sp")
    assignments = [a for a in run.cosmos_role_assignments() if a["principal_id"] == sp.outputs["objectId"]]
    exported = run.worker_environment[contract.Env.COSMOS_CONTAINERS].split(",")
    assert len(assignments) == len(exported)
    db = run.worker_environment[contract.Env.COSMOS_DATABASE]
    assert sorted(a["relative_scope"] for a in assignments) == sorted(f"/dbs/{db}/colls/{c}" for c in exported)
    for a in assignments:
        assert a["principal_id"] == sp.outputs["objectId"] == run.service_principal_object_id
        assert policies.write_actions(a["data_actions"]) == []
        assert a["role_definition_id"] == run.outputs[contract.Output.COSMOS_ROLE_DEFINITION_ID]


def test_no_static_secret_resource(every_stack):
    forbidden = (
        "applicationPassword",
        "applicationCertificate",
        "servicePrincipalPassword",
        "servicePrincipalCertificate",
        "aws:iam/accessKey:AccessKey",
        "aws:iam/user:User",
        "listDatabaseAccountKeys",
    )
    for r in every_stack.resources:
        assert not any(f.lower() in r.type_.lower() for f in forbidden), r.type_


def test_every_bucket_blocks_public_access_denies_plain_http_and_uses_kms(every_stack):
    run = every_stack
    keys = {
        "export-" + run.stack: run.named("aws:kms/key:Key", f"export-{run.stack}-key").outputs["arn"],
        f"export-{run.stack}-audit": run.named("aws:kms/key:Key", f"export-{run.stack}-audit-key").outputs["arn"],
    }
    assert keys[f"export-{run.stack}"] == run.kms_key_arn
    for bucket in run.of_type("aws:s3/bucket:Bucket"):
        bid = bucket.outputs["id"]
        key_arn = keys[bucket.name.removesuffix("-bucket")]  # each bucket under its own key
        (pab,) = [
            r
            for r in run.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
            if r.inputs["bucket"] == bid
        ]
        assert all(
            pab.inputs[k] is True
            for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        )
        (sse,) = [
            r
            for r in run.of_type(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
            )
            if r.inputs["bucket"] == bid
        ]
        (rule,) = sse.inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn}
        assert rule["bucketKeyEnabled"] is True
        (pol,) = [r for r in run.of_type("aws:s3/bucketPolicy:BucketPolicy") if r.inputs["bucket"] == bid]
        statements = {s["Sid"]: s for s in json.loads(pol.inputs["policy"])["Statement"]}
        assert statements["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        if bucket.name == f"export-{run.stack}-bucket":
            assert statements["DenyPutWithOtherKey"]["Condition"]["StringNotEquals"] == {
                "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn
            }
        (own,) = [
            r
            for r in run.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
            if r.inputs["bucket"] == bid
        ]
        assert own.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
        (ver,) = [r for r in run.of_type("aws:s3/bucketVersioning:BucketVersioning") if r.inputs["bucket"] == bid]
        assert ver.inputs["versioningConfiguration"]["status"] == "Enabled"
    assert all(k.inputs["enableKeyRotation"] is True for k in run.of_type("aws:kms/key:Key"))


def test_task_role_grants_nothing_outside_prefix_and_key(every_stack):
    run = every_stack
    doc = run.task_role_policy()
    bucket, prefix = run.bucket, run.prefix
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if all(a.startswith("s3:") for a in actions):
            for res in resources:
                assert res in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}/*"), res
            if resources == [f"arn:aws:s3:::{bucket}"]:
                # Bucket level: listing only; ListBucket narrowed to the prefix (uploads have no prefix key).
                assert actions in (["s3:ListBucket"], ["s3:ListBucketMultipartUploads"]), actions
                if actions == ["s3:ListBucket"]:
                    assert st["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
        elif all(a.startswith("kms:") for a in actions):
            assert resources == [run.kms_key_arn]
            assert st["Condition"]["StringEquals"]["kms:ViaService"].startswith("s3.")
        else:
            assert actions == ["sts:GetWebIdentityToken"]
            cond = st["Condition"]
            assert cond["ForAllValues:StringEquals"] == {
                "sts:IdentityTokenAudience": [contract.TOKEN_EXCHANGE_AUDIENCE]
            }
            assert cond["StringEquals"] == {"sts:SigningAlgorithm": contract.SIGNING_ALGORITHM}
            assert cond["NumericLessThanEquals"]["sts:DurationSeconds"] == int(
                run.worker_environment[contract.Env.TOKEN_DURATION_SECONDS]
            )


def test_task_role_trust_and_task_definition_hardening(every_stack):
    run = every_stack
    role = run.named(ROLE, f"export-{run.stack}-task")
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert set(trust["Condition"]) == {"StringEquals", "ArnLike"}
    td = run.task_definition()
    assert td.inputs["taskRoleArn"] == run.task_role_arn
    assert td.inputs["executionRoleArn"] == run.outputs[contract.Output.EXECUTION_ROLE_ARN] != run.task_role_arn
    (container,) = json.loads(td.inputs["containerDefinitions"])
    assert container["readonlyRootFilesystem"] is True
    assert container["user"] not in ("root", "0", "0:0")
    assert "secrets" not in container
    assert container["command"][:2] == ["run", "--mode"]
    sg = run.one("aws:ec2/securityGroup:SecurityGroup")
    assert not sg.inputs.get("ingress")


def test_worker_environment_matches_task_definition_and_outputs(every_stack):
    run = every_stack
    env = run.task_definition_environment()
    assert env == run.worker_environment
    assert env[contract.Env.IDENTITY_MODE] == "workload"
    assert env[contract.Env.AZURE_CLIENT_ID] == run.client_id
    assert env[contract.Env.AZURE_TENANT_ID] == run.tenant_id
    assert env[contract.Env.BUCKET] == run.bucket and env[contract.Env.PREFIX] == run.prefix
    assert env[contract.Env.KMS_KEY_ARN] == run.kms_key_arn
    assert not any(re.search(r"(?i)secret|password|key$", k) for k in env)


def test_every_contract_output_is_exported(every_stack):
    keys = {v for k, v in vars(contract.Output).items() if not k.startswith("_")}
    assert set(every_stack.outputs) == keys
    cmd = every_stack.outputs[contract.Output.RUN_TASK_COMMAND].splitlines()[-1]  # after the operator's assume-role
    assert cmd.startswith("aws ecs run-task ")
    assert every_stack.outputs[contract.Output.TASK_DEFINITION_ARN] in cmd


def test_schedule_has_retry_dlq_and_scoped_role(every_stack):
    run = every_stack
    sched = run.named("aws:scheduler/schedule:Schedule", f"export-{run.stack}-schedule")
    target = sched.inputs["target"]
    dlq = run.one("aws:sqs/queue:Queue")
    assert target["deadLetterConfig"] == {"arn": dlq.outputs["arn"]}
    assert set(target["retryPolicy"]) == {"maximumRetryAttempts", "maximumEventAgeInSeconds"}
    assert target["ecsParameters"]["taskDefinitionArn"] == run.outputs[contract.Output.TASK_DEFINITION_ARN]
    scheduler_role = run.named(ROLE, f"export-{run.stack}-scheduler")
    (policy,) = [
        r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.inputs["role"] == scheduler_role.outputs["id"]
    ]
    pass_role = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}["PassWorkerRoles"]
    assert pass_role["Resource"] == sorted([run.task_role_arn, run.outputs[contract.Output.EXECUTION_ROLE_ARN]])


def test_environments_really_differ(dev, prod):
    assert dev.named("aws:s3/bucket:Bucket", "export-dev-bucket").inputs["objectLockEnabled"] is False
    assert prod.named("aws:s3/bucket:Bucket", "export-prod-bucket").inputs["objectLockEnabled"] is True
    lock = prod.named("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", "export-prod-object-lock")
    assert lock.inputs["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 365}
    assert not dev.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert (
        dev.named("aws:scheduler/schedule:Schedule", "export-dev-schedule").inputs["scheduleExpression"]
        != prod.named("aws:scheduler/schedule:Schedule", "export-prod-schedule").inputs["scheduleExpression"]
    )


def test_revoke_switch_removes_fic_and_assignments_only():
    before = run_stack("prod")
    after = run_stack("prod", {"cosmosAccessEnabled": False})
    assert before.of_type(FIC) and before.of_type(ASSIGNMENT)
    assert after.of_type(FIC) == [] and after.of_type(ASSIGNMENT) == []
    removed = {(r.type_, r.name) for r in before.resources} - {(r.type_, r.name) for r in after.resources}
    assert {t for t, _ in removed} == {FIC, ASSIGNMENT}
    assert {(r.type_, r.name) for r in after.resources} < {(r.type_, r.name) for r in before.resources}
    # The app, SP and every AWS resource stay, so turning it back on restores the same identity.
    assert after.client_id == before.client_id
    assert after.service_principal_object_id == before.service_principal_object_id


def test_harness_is_repeatable_in_one_process():
    a, b = run_stack("staging"), run_stack("staging")
    assert a.outputs == b.outputs

    # Registration order follows asyncio scheduling; the set of resources and their inputs must not change.
    def key(run):
        return sorted(((r.type_, r.name, repr(r.inputs)) for r in run.resources))

    assert key(a) == key(b)


def test_assignment_guids_are_deterministic_and_distinct(every_stack):
    guids = [r.inputs["roleAssignmentId"] for r in every_stack.of_type(ASSIGNMENT)]
    assert len(set(guids)) == len(guids)
    again = run_stack(every_stack.stack)
    assert guids == [r.inputs["roleAssignmentId"] for r in again.of_type(ASSIGNMENT)]


def test_only_the_task_role_reads_writes_and_deletes_exports(every_stack):
    """The bucket and key policies name the real task role (its exported ARN), and nobody else but,
    on forceDestroy stacks (dev), the CI deployer as a deleter only."""
    run = every_stack
    task = run.task_role_arn
    assert (
        task
        == f"arn:aws:iam::{run.outputs['taskRoleArn'].split(':')[4]}:role/cosmos-s3-export/{run.stack}/export-{run.stack}-task"
    )
    policy = run.named("aws:s3/bucketPolicy:BucketPolicy", f"export-{run.stack}-policy")
    s = {st["Sid"]: st for st in json.loads(policy.inputs["policy"])["Statement"]}
    allowed = lambda sid: s[sid]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]  # noqa: E731
    # The restore task role reads the export and writes drill reports / restore progress (its IAM policy
    # narrows the writes to drills/ and restores/); it never deletes.
    users = sorted([task, run.outputs[Output.RESTORE_TASK_ROLE_ARN]]) if run.has_restore else [task]
    # Operator roles holding `status` read too (their IAM policy narrows that to the state objects).
    status = [arn for kind, arn in run.outputs[Output.OPERATOR_ROLE_ARNS].items() if "status" in kind]
    readers = sorted(users + status)
    # The analyst role (analystPrincipals) reads and writes too, fenced by its own deny statements to the tables
    # and Athena's results (tests/infra/test_analytics.py); it never deletes.
    analysts = [run.outputs[Output.ANALYST_ROLE_ARN]] if run.outputs.get(Output.ANALYST_ROLE_ARN) else []
    assert sorted(allowed("OnlyReadersReadObjects")) == sorted(readers + analysts)
    assert sorted(allowed("OnlyWritersWriteObjects")) == sorted(users + analysts)
    account = task.split(":")[4]
    deployer = f"arn:aws:iam::{account}:role/gh-{run.stack}-deploy"
    assert allowed("OnlyDeletersDeleteObjects") == (sorted([deployer, task]) if run.stack == "dev" else [task])
    key = {
        st["Sid"]: st
        for st in json.loads(run.named("aws:kms/key:Key", f"export-{run.stack}-key").inputs["policy"])["Statement"]
    }
    assert sorted(key["ReadersAndWritersDecrypt"]["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == sorted(
        readers + analysts
    )
    assert sorted(key["WritersEncrypt"]["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == sorted(users + analysts)
    assert not any(
        st["Principal"] == {"AWS": f"arn:aws:iam::{account}:root"} and "kms:*" in st["Action"] for st in key.values()
    )


def test_every_role_sits_under_its_stack_path_with_the_bootstrap_boundary(every_stack):
    run = every_stack
    account = run.task_role_arn.split(":")[4]
    roles = run.of_type(ROLE)
    names = {r.inputs["name"] for r in roles}
    assert names >= {f"export-{run.stack}-{k}" for k in ("task", "execution", "scheduler")}
    assert all(n.startswith(f"export-{run.stack}-") for n in names)  # a restore role joins the same way
    for role in roles:
        assert role.inputs["path"] == f"/cosmos-s3-export/{run.stack}/"
        assert (
            role.inputs["permissionsBoundary"] == f"arn:aws:iam::{account}:policy/cosmos-s3-export-{run.stack}-boundary"
        )


def test_name_less_resources_carry_the_stack_tag(every_stack):
    """KMS keys, the security group and the task definition: the deployer's policy matches this tag."""
    run = every_stack
    for type_ in ("aws:kms/key:Key", "aws:ec2/securityGroup:SecurityGroup", "aws:ecs/taskDefinition:TaskDefinition"):
        for r in run.of_type(type_):
            assert r.inputs["tags"]["cosmos-s3-export-stack"] == run.stack, (type_, r.name)
    purposes = {r.name: r.inputs["tags"]["cosmos-s3-export-purpose"] for r in run.of_type("aws:kms/key:Key")}
    assert purposes == {
        f"export-{run.stack}-key": "export",
        f"export-{run.stack}-audit-key": "audit",
        f"export-{run.stack}-alerts-key": "alerts",
    }


def test_key_auth_on_the_cosmos_account_is_reported(monkeypatch):
    from sandbox import mocked_stack

    assert run_stack("dev").outputs[contract.Output.COSMOS_LOCAL_AUTH_DISABLED] is True
    original = mocked_stack._Mocks.call

    def keys_allowed(self, args):
        out = original(self, args)
        return {**out, "disableLocalAuth": False} if args.token == "azure-native:cosmosdb:getDatabaseAccount" else out

    monkeypatch.setattr(mocked_stack._Mocks, "call", keys_allowed)
    assert run_stack("dev").outputs[contract.Output.COSMOS_LOCAL_AUTH_DISABLED] is False
