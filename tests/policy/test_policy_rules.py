"""The policy rules on realistic property dicts: compliant ones pass, each broken one is named."""

from __future__ import annotations

import json

import pytest

from cosmos_export import contract
from policy import rules
from policy.rules import UNKNOWN, Resource, check_stack
from tests.policy import policy_fixtures as fx
from tests.policy.policy_fixtures import good_stack, replace


def messages(stack) -> list[str]:
    return [m for _, m in check_stack(stack)]


def test_compliant_stack_has_no_violation():
    assert check_stack(good_stack()) == []


# --- static credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    "type_",
    [
        "azuread:index/applicationPassword:ApplicationPassword",
        "azuread:index/applicationCertificate:ApplicationCertificate",
        "azuread:index/servicePrincipalPassword:ServicePrincipalPassword",
        "aws:iam/accessKey:AccessKey",
    ],
)
def test_static_credential_resources_are_refused(type_):
    [msg] = rules.check_static_credential(type_)
    assert msg.startswith(f"{type_} creates ") and "no static credential" in msg


def test_ordinary_resources_are_not_static_credentials():
    assert rules.check_static_credential("aws:iam/role:Role") == []


# --- federated identity credential --------------------------------------------------------

GOOD_FIC = {"issuer": fx.ISSUER, "subject": fx.TASK_ROLE_ARN, "audiences": [contract.TOKEN_EXCHANGE_AUDIENCE]}


def test_good_fic_shape():
    assert rules.check_federated_credential(GOOD_FIC) == []


def test_fic_with_extra_audience_is_refused():
    [msg] = rules.check_federated_credential(
        {**GOOD_FIC, "audiences": ["api://AzureADTokenExchange", "sts.amazonaws.com"]}
    )
    assert msg == (
        "federated identity credential audiences are ['api://AzureADTokenExchange', 'sts.amazonaws.com']; "
        "they must be exactly ['api://AzureADTokenExchange']"
    )


@pytest.mark.parametrize("subject", ["*", "arn:aws:iam::123456789012:role/*", ""])
def test_fic_wildcard_subject_is_refused(subject):
    [msg] = rules.check_federated_credential({**GOOD_FIC, "subject": subject})
    assert msg == (
        f"federated identity credential subject {subject!r} is empty or a wildcard; "
        "it must be the task role ARN exactly"
    )


def test_fic_subject_must_be_a_role_arn():
    [msg] = rules.check_federated_credential({**GOOD_FIC, "subject": "repo:acme/export:ref:refs/heads/main"})
    assert "is not an IAM role ARN" in msg


def test_fic_issuer_with_trailing_slash_is_refused():
    [msg] = rules.check_federated_credential({**GOOD_FIC, "issuer": fx.ISSUER + "/"})
    assert msg.startswith(f"federated identity credential issuer '{fx.ISSUER}/' is not an AWS outbound")


def test_fic_unknown_values_during_preview_are_not_guessed():
    assert (
        rules.check_federated_credential(
            {"issuer": UNKNOWN, "subject": UNKNOWN, "audiences": [contract.TOKEN_EXCHANGE_AUDIENCE]}
        )
        == []
    )


def test_stack_fic_subject_must_be_the_task_role_arn():
    other = f"arn:aws:iam::{fx.ACCOUNT}:role/export-execution-9f8e7d6"
    assert messages(replace(good_stack(), "fic", subject=other)) == [
        f"ApplicationFederatedIdentityCredential 'fic' subject {other!r} is not the task role ARN "
        f"[{fx.TASK_ROLE_ARN!r}]; take it from the task role's arn output"
    ]


def test_stack_fic_subject_differing_only_in_case_is_refused():
    # Entra matches subjects case-sensitively (AADSTS7002138).
    assert (
        len(messages(replace(good_stack(), "fic", subject=fx.TASK_ROLE_ARN.replace("export-task", "Export-Task")))) == 1
    )


def test_stack_fic_issuer_must_be_the_federation_issuer():
    other = "https://aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee.tokens.sts.global.api.aws"
    assert messages(replace(good_stack(), "fic", issuer=other)) == [
        f"ApplicationFederatedIdentityCredential 'fic' issuer {other!r} is not the account's outbound "
        f"federation issuer [{fx.ISSUER!r}]; take it from issuerIdentifier"
    ]


def test_stack_fic_matched_by_dependency_during_preview():
    stack = good_stack()
    stack = [
        Resource(
            r.type,
            r.key,
            {**r.props, "subject": UNKNOWN, "issuer": UNKNOWN},
            {"subject": frozenset({"task-role"}), "issuer": frozenset({"federation"})},
        )
        if r.key == "fic"
        else r
        for r in stack
    ]
    assert messages(stack) == []
    wrong = [
        Resource(r.type, r.key, r.props, {"subject": frozenset({"execution-role"})}) if r.key == "fic" else r
        for r in stack
    ]
    assert [m for m in messages(wrong) if "subject" in m]


def test_fic_without_any_task_definition_is_reported():
    stack = [r for r in good_stack() if r.type != rules.T_TASK_DEFINITION]
    assert "no ECS task definition's taskRoleArn names a role of this stack" in messages(stack)[0]


# --- Cosmos -------------------------------------------------------------------------------------


def test_cosmos_role_with_write_action_is_refused():
    write = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create"
    props = {"permissions": [{"dataActions": [*contract.COSMOS_DATA_ACTIONS, write]}]}
    assert rules.check_cosmos_role_definition(props) == [
        f"Cosmos SQL role definition grants [{write!r}], outside the worker's read-only actions; "
        f"allowed are only {list(contract.COSMOS_DATA_ACTIONS)!r} (the export reader) or a subset of "
        f"{list(contract.COSMOS_RESTORE_DATA_ACTIONS)!r} (the restore writer, assignable only on restore targets)"
    ]


def test_cosmos_role_with_wildcard_is_refused():
    props = {"permissions": [{"dataActions": ["Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/*"]}]}
    assert len(rules.check_cosmos_role_definition(props)) == 1


def test_cosmos_role_subset_is_allowed():
    assert (
        rules.check_cosmos_role_definition({"permissions": [{"dataActions": list(contract.COSMOS_DATA_ACTIONS[:2])}]})
        == []
    )


def test_cosmos_restore_writer_role_is_allowed_as_a_role():
    assert (
        rules.check_cosmos_role_definition(
            {"permissions": [{"dataActions": list(contract.COSMOS_RESTORE_DATA_ACTIONS)}]}
        )
        == []
    )


def test_cosmos_role_mixing_queries_and_writes_is_refused():
    query = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery"
    props = {"permissions": [{"dataActions": [*contract.COSMOS_RESTORE_DATA_ACTIONS, query]}]}
    [msg] = rules.check_cosmos_role_definition(props)
    assert "outside the worker's read-only actions" in msg


# --- the restore identity ------------------------------------------------------------------------


def test_compliant_restore_stack_has_no_violation():
    assert check_stack(fx.restore_stack()) == []


def _restore_msgs(**props) -> list[str]:
    return messages(replace(fx.restore_stack(), "restore-assignment", **props))


def test_writer_on_an_exported_source_container_is_refused():
    assert _restore_msgs(scope=f"{fx.COSMOS_ACCOUNT_ID}/dbs/app/colls/orders") == [
        "SqlResourceSqlRoleAssignment 'restore-assignment' gives a writer role on the exported source container "
        "app/orders; a restore identity may write only its target containers"
    ]


@pytest.mark.parametrize(
    ("scope", "where"),
    [
        ("/dbs/app", "database 'app'"),
        ("/dbs/restore-drills", "database 'restore-drills'"),
        ("", "the account"),
        ("/", "the account"),
    ],
)
def test_writer_on_a_database_or_the_account_is_refused(scope, where):
    writes = sorted(set(contract.COSMOS_RESTORE_DATA_ACTIONS) - set(contract.COSMOS_DATA_ACTIONS))
    assert _restore_msgs(scope=f"{fx.COSMOS_ACCOUNT_ID}{scope}") == [
        f"SqlResourceSqlRoleAssignment 'restore-assignment' gives a writer role (data actions {writes!r}) on "
        f"{where}; assign it only on each restore target container"
    ]


def test_writer_on_a_container_that_is_no_target_is_refused():
    [msg] = _restore_msgs(scope=f"{fx.COSMOS_ACCOUNT_ID}/dbs/restore-drills/colls/other")
    assert msg.startswith(
        "SqlResourceSqlRoleAssignment 'restore-assignment' gives a writer role on container "
        "restore-drills/other, which is not a restore target (['restore-drills/orders-drill'])"
    )


def test_writer_without_any_restore_task_is_refused():
    stack = [r for r in fx.restore_stack() if r.key != "restore-task"]
    assert any("which is not a restore target (none declared)" in m for m in messages(stack))


def test_export_reader_on_a_restore_target_is_refused():
    stack = replace(
        fx.restore_stack(), "assignment", scope=f"{fx.COSMOS_ACCOUNT_ID}/dbs/restore-drills/colls/orders-drill"
    )
    assert messages(stack) == [
        "SqlResourceSqlRoleAssignment 'assignment' gives the export reader container restore-drills/orders-drill, "
        "which holds restore target container(s) ['restore-drills/orders-drill']; assign it on the exported source "
        "containers only"
    ]


def test_export_reader_on_the_target_database_is_refused():
    stack = replace(fx.restore_stack(), "assignment", scope=f"{fx.COSMOS_ACCOUNT_ID}/dbs/restore-drills")
    [msg] = messages(stack)
    assert "gives the export reader database 'restore-drills', which holds restore target" in msg


def test_export_principal_holding_the_writer_role_is_refused():
    found = _restore_msgs(principalId=fx.SP_OBJECT_ID)
    assert any(f"principal {fx.SP_OBJECT_ID!r} holds both the export reader and a writer role" in m for m in found)


def test_restore_rules_wait_for_unknown_task_definitions():
    stack = replace(fx.restore_stack(), "restore-task", containerDefinitions=UNKNOWN)
    stack = replace(stack, "restore-assignment", scope=f"{fx.COSMOS_ACCOUNT_ID}/dbs/app/colls/orders")
    assert not any("writer role" in m for m in messages(stack))


def test_cosmos_assignment_to_another_principal_is_refused():
    stranger = "11111111-2222-3333-4444-555555555555"
    assert messages(replace(good_stack(), "assignment", principalId=stranger)) == [
        f"SqlResourceSqlRoleAssignment 'assignment' principalId {stranger!r} is not the service "
        f"principal's object id [{fx.SP_OBJECT_ID!r}]"
    ]


def test_cosmos_assignment_to_builtin_contributor_is_refused():
    contributor = f"{fx.COSMOS_ACCOUNT_ID}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
    msg, writer = messages(replace(good_stack(), "assignment", roleDefinitionId=contributor))
    assert (
        msg.startswith("SqlResourceSqlRoleAssignment 'assignment' roleDefinitionId") and "built-in Data Reader" in msg
    )
    assert "gives a writer role on the exported source container app/orders" in writer


def test_cosmos_assignment_to_builtin_reader_is_allowed():
    reader = f"{fx.COSMOS_ACCOUNT_ID}/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}"
    assert messages(replace(good_stack(), "assignment", roleDefinitionId=reader)) == []


# --- buckets ----------------------------------------------------------------------------------------


def test_bucket_without_public_access_block_is_refused():
    stack = [r for r in good_stack() if r.key != "pab"]
    assert messages(stack) == ["Bucket 'bucket' has no BucketPublicAccessBlock; add one with all four blocks true"]


def test_public_access_block_with_one_flag_off_is_refused():
    assert messages(replace(good_stack(), "pab", restrictPublicBuckets=False)) == [
        "BucketPublicAccessBlock 'pab' for Bucket 'bucket' leaves ['restrictPublicBuckets'] off; all four must be true"
    ]


def test_bucket_policy_without_tls_deny_is_refused():
    policy = {"Version": "2012-10-17", "Statement": []}
    assert messages(replace(good_stack(), "bucket-policy", policy=json.dumps(policy))) == [
        "Bucket 'bucket' bucket policy does not deny requests with aws:SecureTransport=false"
    ]


def test_bucket_without_policy_is_refused():
    assert messages([r for r in good_stack() if r.key != "bucket-policy"]) == [
        "Bucket 'bucket' has no bucket policy; add one denying aws:SecureTransport=false"
    ]


def test_bucket_with_sse_s3_is_refused():
    rules_ = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]
    assert messages(replace(good_stack(), "sse", rules=rules_)) == [
        "Bucket 'bucket' is not encrypted with SSE-KMS; configure sseAlgorithm 'aws:kms' with the export KMS key"
    ]


def test_second_bucket_is_checked_too():
    stack = good_stack() + [Resource(rules.T_BUCKET, "logs", {"bucket": "acme-logs", "id": "acme-logs"})]
    assert len([m for m in messages(stack) if m.startswith("Bucket 'logs'")]) == 3


# --- task role ------------------------------------------------------------------------------------------


def _with_statement(statement: dict) -> list[Resource]:
    doc = fx.task_role_policy()
    doc["Statement"].append(statement)
    return replace(good_stack(), "task-role-policy", policy=json.dumps(doc))


def test_task_role_star_resource_is_refused():
    assert messages(_with_statement({"Sid": "Oops", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})) == [
        "RolePolicy 'task-role-policy' statement Oops allows ['s3:GetObject'] on Resource \"*\"; "
        "scope it to the export prefix and key"
    ]


def test_task_role_wildcard_action_is_refused():
    found = messages(
        _with_statement(
            {"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{fx.BUCKET}/{fx.PREFIX}/*"}
        )
    )
    # The task-role scope rule and the every-role least-privilege rule both refuse it.
    assert sorted(found) == [
        "RolePolicy 'task-role-policy' statement All allows whole services ['s3:*']; name the exact actions",
        "RolePolicy 'task-role-policy' statement All allows wildcard actions ['s3:*']; name the exact actions",
    ]


def test_task_role_other_prefix_is_refused():
    other = f"arn:aws:s3:::{fx.BUCKET}/exports/prod/*"
    [msg] = messages(_with_statement({"Sid": "Other", "Effect": "Allow", "Action": "s3:GetObject", "Resource": other}))
    assert msg == (
        f"RolePolicy 'task-role-policy' statement Other grants [{other!r}], outside the export prefix "
        f"arn:aws:s3:::{fx.BUCKET}/{fx.PREFIX}/* and the export KMS key"
    )


def test_task_role_prefix_sibling_is_refused():
    # "exports/dev-backup/..." starts with "exports/dev" but is another prefix.
    sibling = f"arn:aws:s3:::{fx.BUCKET}/{fx.PREFIX}-backup/*"
    assert len(messages(_with_statement({"Effect": "Allow", "Action": "s3:GetObject", "Resource": sibling}))) == 1


def test_task_role_bucket_level_change_is_refused():
    bucket = f"arn:aws:s3:::{fx.BUCKET}"
    [msg] = messages(
        _with_statement(
            {
                "Sid": "Pol",
                "Effect": "Allow",
                "Resource": bucket,
                "Action": ["s3:ListBucketMultipartUploads", "s3:PutBucketPolicy"],
            }
        )
    )
    assert msg == (
        f"RolePolicy 'task-role-policy' statement Pol allows ['s3:PutBucketPolicy'] on the bucket {bucket} "
        "itself; only ['s3:ListBucket', 's3:ListBucketMultipartUploads'] belong there, object actions go on "
        "the prefix"
    )


def test_task_role_listing_uploads_on_the_bucket_is_allowed():
    assert (
        messages(
            _with_statement(
                {
                    "Sid": "Uploads",
                    "Effect": "Allow",
                    "Action": "s3:ListBucketMultipartUploads",
                    "Resource": f"arn:aws:s3:::{fx.BUCKET}",
                }
            )
        )
        == []
    )


def test_token_minting_without_audience_condition_is_refused():
    [msg] = messages(
        _with_statement({"Sid": "Tok", "Effect": "Allow", "Action": "sts:GetWebIdentityToken", "Resource": "*"})
    )
    assert msg.startswith(
        "RolePolicy 'task-role-policy' statement Tok allows sts:GetWebIdentityToken without the condition"
    )


def test_managed_policy_attached_to_task_role_is_refused():
    stack = good_stack() + [
        Resource(
            rules.T_ROLE_POLICY_ATTACHMENT,
            "att",
            {"role": "export-task-0a1b2c3", "policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"},
        )
    ]
    assert messages(stack) == [
        "RolePolicyAttachment 'att' attaches 'arn:aws:iam::aws:policy/AmazonS3FullAccess' "
        "to the task role; only this stack's own export policy may be attached"
    ]


def test_deny_statements_are_not_scope_violations():
    assert messages(_with_statement({"Effect": "Deny", "Action": "*", "Resource": "*"})) == []


# --- task definition -----------------------------------------------------------------------------------


def _td(**overrides) -> dict:
    return {"containerDefinitions": json.dumps([fx.container(**overrides)])}


def test_good_task_definition():
    # EXPORT_KMS_KEY_ARN and EXPORT_TOKEN_DURATION_SECONDS contain KEY/TOKEN but are contract settings.
    assert rules.check_task_definition(_td()) == []


def test_container_secrets_are_refused():
    secrets = [{"name": "COSMOS_KEY", "valueFrom": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"}]
    assert rules.check_task_definition(_td(secrets=secrets)) == [
        "container 'worker' has secrets ['COSMOS_KEY']; the worker needs no secret (it federates its identity): remove them"
    ]


@pytest.mark.parametrize("name", ["AZURE_CLIENT_SECRET", "COSMOS_KEY", "DB_PASSWORD", "GITHUB_TOKEN"])
def test_secret_looking_env_is_refused(name):
    env = [*fx.container()["environment"], {"name": name, "value": "hunter2"}]
    assert rules.check_task_definition(_td(environment=env)) == [
        f"container 'worker' sets environment variable {name!r} with a value; "
        "its name suggests a secret, and the worker takes none: remove it"
    ]


def test_access_key_value_under_innocent_name_is_refused():
    env = [*fx.container()["environment"], {"name": "NOTES", "value": "AKIAIOSFODNN7EXAMPLE"}]
    assert rules.check_task_definition(_td(environment=env)) == [
        "container 'worker' environment variable 'NOTES' holds what looks like an AWS access key id: remove it"
    ]


@pytest.mark.parametrize("user", [None, "root", "0", "0:0"])
def test_root_user_is_refused(user):
    assert rules.check_task_definition(_td(user=user)) == [
        f"container 'worker' runs as user {user!r}; set a non-root user (e.g. \"10001:10001\")"
    ]


def test_writable_root_filesystem_is_refused():
    assert rules.check_task_definition(_td(readonlyRootFilesystem=False)) == [
        "container 'worker' has readonlyRootFilesystem=False; it must be true"
    ]


# --- Least privilege of every program role and key ---------------------------------------

TASK_ROLE_URN = "urn:pulumi:dev::cosmos-s3-export::cosmos-s3-export:aws:TaskRole$aws:iam/role:Role::export-dev-task"
GOOD_ROLE = {
    "path": "/cosmos-s3-export/dev/",
    "permissionsBoundary": f"arn:aws:iam::{fx.ACCOUNT}:policy/cosmos-s3-export-dev-boundary",
    "assumeRolePolicy": json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": fx.ACCOUNT}},
                }
            ]
        }
    ),
}


def test_program_role_under_its_stack_path_with_the_boundary_passes():
    assert rules.check_program_role(GOOD_ROLE, "dev") == []
    assert rules.stack_of_urn(TASK_ROLE_URN) == "dev"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"path": "/cosmos-s3-export/"}, "role path '/cosmos-s3-export/' is not /cosmos-s3-export/dev/"),
        (
            {"path": "/cosmos-s3-export/staging/"},
            "role path '/cosmos-s3-export/staging/' is not /cosmos-s3-export/dev/",
        ),
        (
            {"permissionsBoundary": None},
            "role has permissionsBoundary None; every program role carries the bootstrap's boundary",
        ),
        (
            {"permissionsBoundary": f"arn:aws:iam::{fx.ACCOUNT}:policy/cosmos-s3-export-staging-boundary"},
            "role has permissionsBoundary 'arn:aws:iam::123456789012:policy/cosmos-s3-export-staging-boundary'",
        ),
        (
            {
                "assumeRolePolicy": json.dumps(
                    {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "scheduler.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                                "Condition": {"StringEquals": {"aws:SourceAccount": "1"}},
                            }
                        ]
                    }
                )
            },
            "trust of scheduler.amazonaws.com has no aws:SourceArn condition",
        ),
        (
            {
                "assumeRolePolicy": json.dumps(
                    {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ]
                    }
                )
            },
            "trust of ['ecs-tasks.amazonaws.com'] has no aws:SourceAccount condition",
        ),
    ],
)
def test_program_role_off_its_path_boundary_or_trust_is_refused(change, message):
    [found] = rules.check_program_role({**GOOD_ROLE, **change}, "dev")
    assert found.startswith(message), found


def test_unknown_boundary_during_preview_is_not_guessed():
    assert rules.check_program_role({**GOOD_ROLE, "permissionsBoundary": UNKNOWN, "path": UNKNOWN}, "dev") == []


@pytest.mark.parametrize(
    "statement,message",
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "allows whole services ['*']"),
        ({"Effect": "Allow", "Action": ["ec2:*"], "Resource": "*"}, "allows whole services ['ec2:*']"),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "uses NotAction"),
        (
            {"Effect": "Allow", "Action": ["iam:CreateRole", "iam:PutRolePolicy"], "Resource": "*"},
            "allows ['iam:CreateRole', 'iam:PutRolePolicy'] without the iam:PermissionsBoundary condition",
        ),
    ],
)
def test_identity_policy_wildcards_and_unbounded_role_changes_are_refused(statement, message):
    [found] = rules.check_identity_policy({"Statement": [{"Sid": "X", **statement}]}, "RolePolicy 'p'")
    assert found.startswith("RolePolicy 'p' statement X ") and message in found, found


def test_role_changes_under_the_boundary_are_allowed():
    st = {
        "Effect": "Allow",
        "Action": ["iam:CreateRole"],
        "Resource": "arn:aws:iam::1:role/cosmos-s3-export/dev/*",
        "Condition": {"ArnEquals": {"iam:PermissionsBoundary": "arn:aws:iam::1:policy/b"}},
    }
    assert rules.check_identity_policy({"Statement": [st]}, "p") == []


@pytest.mark.parametrize(
    "statement,message",
    [
        (
            {
                "Sid": "Default",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            "allows kms:*",
        ),
        (
            {
                "Sid": "Use",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": ["kms:Decrypt"],
                "Resource": "*",
            },
            "allows ['kms:decrypt'] to {'AWS': 'arn:aws:iam::1:root'} without an aws:PrincipalArn condition",
        ),
        (
            {
                "Sid": "Grant",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": ["kms:CreateGrant"],
                "Resource": "*",
            },
            "allows ['kms:creategrant']",
        ),
        (
            {
                "Sid": "Trail",
                "Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"},
                "Action": "kms:GenerateDataKey*",
                "Resource": "*",
            },
            "without an aws:SourceArn condition",
        ),
    ],
)
def test_key_policy_handing_out_use_is_refused(statement, message):
    [found] = rules.check_kms_key_policy({"Statement": [statement]}, "Key 'k'")
    assert message in found, found


def test_stack_with_default_key_policy_is_refused():
    found = messages(
        replace(
            good_stack(),
            "key",
            policy=json.dumps(
                {
                    "Statement": [
                        {
                            "Sid": "Enable IAM User Permissions",
                            "Effect": "Allow",
                            "Principal": {"AWS": "arn:aws:iam::1:root"},
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ]
                }
            ),
        )
    )
    assert found == [
        "Key 'key' statement Enable IAM User Permissions allows kms:*: split key administration from key "
        "use, and grant use to the roles that need it only (the default key policy hands every IAM "
        "principal the key)"
    ]


def test_application_with_a_password_is_refused():
    assert rules.check_application_secret({"displayName": "x"}) == []
    assert rules.check_application_secret({"password": UNKNOWN}) == []
    [found] = rules.check_application_secret({"password": {"displayName": "ci", "keyId": "k"}})
    assert found.startswith("Entra application holds a password (client secret)")


# --- alerting ---------------------------------------------------------------------------


def test_unencrypted_topic_is_refused():
    [msg] = messages(replace(good_stack(), "alerts", kmsMasterKeyId=None))
    assert msg.startswith("Topic 'alerts' is not encrypted; set kmsMasterKeyId")
    assert messages(replace(good_stack(), "alerts", kmsMasterKeyId=UNKNOWN)) == []  # preview: judged at up


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (
            "*",
            "statement 'CloudWatchAlarmsPublish' allows '*'; only ['cloudwatch.amazonaws.com', 'events.amazonaws.com'] "
            "may publish alerts",
        ),
        (
            {"AWS": "arn:aws:iam::999999999999:root"},
            "statement 'CloudWatchAlarmsPublish' allows {'AWS': "
            "'arn:aws:iam::999999999999:root'}; only ['cloudwatch.amazonaws.com', 'events.amazonaws.com'] may publish alerts",
        ),
        (
            {"Service": "s3.amazonaws.com"},
            "statement 'CloudWatchAlarmsPublish' allows {'Service': 's3.amazonaws.com'}; "
            "only ['cloudwatch.amazonaws.com', 'events.amazonaws.com'] may publish alerts",
        ),
    ],
)
def test_topic_policy_allows_only_cloudwatch_and_eventbridge(principal, expected):
    document = fx.topic_policy()
    document["Statement"][0]["Principal"] = principal
    assert messages(replace(good_stack(), "alerts-policy", policy=json.dumps(document))) == [
        f"TopicPolicy 'alerts-policy': {expected}"
    ]


def test_topic_policy_without_source_account_is_refused():
    document = fx.topic_policy()
    del document["Statement"][1]["Condition"]["StringEquals"]
    assert messages(replace(good_stack(), "alerts-policy", policy=json.dumps(document))) == [
        "TopicPolicy 'alerts-policy': statement 'EventBridgeRulesPublish' lets ['events.amazonaws.com'] of any account "
        "publish; add Condition StringEquals aws:SourceAccount = this account"
    ]


def test_worker_without_freshness_alarm_or_task_rule_is_refused():
    no_alarm = replace(good_stack(), "stale-orders", treatMissingData="notBreaching")
    assert messages(no_alarm) == [
        "TaskDefinition 'task' runs the export but no alarm watches CosmosExport Success with missing data breaching: "
        "a stopped backup would go unnoticed; declare the Alerting component"
    ]
    no_rule = [r for r in good_stack() if r.key != "task-failed"]
    assert messages(no_rule) == [
        "TaskDefinition 'task' has no EventBridge rule on ECS task state changes: a failed task would go unnoticed; "
        "declare the Alerting component"
    ]
    no_policy = [r for r in good_stack() if r.key != "alerts-policy"]
    assert messages(no_policy) == [
        "Topic 'alerts' has no topic policy; add one allowing only CloudWatch and "
        "EventBridge of this account to publish"
    ]
