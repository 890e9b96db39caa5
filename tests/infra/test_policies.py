"""Pure policy builders, tested without mocks."""

from __future__ import annotations

import uuid

from components import policies
from cosmos_export import contract

KEY = "arn:aws:kms:eu-west-1:111122223333:key/0b7d7f58-2a64-4f8e-9a0c-6c1f7d3e5b21"


def _by_sid(doc):
    return {s["Sid"]: s for s in doc["Statement"]}


def test_task_role_policy_is_limited_to_prefix_key_and_token():
    doc = policies.task_role_policy(
        bucket="b-1", prefix="cosmos/x", kms_key_arn=KEY, region="eu-west-1", max_token_seconds=900
    )
    s = _by_sid(doc)
    assert set(s) == {
        "ListExportPrefix",
        "ListExportMultipartUploads",
        "ReadWriteExportObjects",
        "ExportKeyThroughS3Only",
        "MintAzureFederationToken",
    }
    assert all(st["Effect"] == "Allow" for st in doc["Statement"])
    assert s["ListExportPrefix"] == {
        "Sid": "ListExportPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::b-1",
        "Condition": {"StringLike": {"s3:prefix": ["cosmos/x", "cosmos/x/*"]}},
    }
    assert s["ListExportMultipartUploads"] == {
        "Sid": "ListExportMultipartUploads",
        "Effect": "Allow",
        "Action": "s3:ListBucketMultipartUploads",
        "Resource": "arn:aws:s3:::b-1",
    }
    objects = s["ReadWriteExportObjects"]
    assert objects["Resource"] == "arn:aws:s3:::b-1/cosmos/x/*"
    assert sorted(objects["Action"]) == sorted(
        [
            "s3:GetObject",
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
            "s3:GetObjectTagging",
            "s3:PutObjectTagging",
            "s3:GetObjectVersion",
            "s3:GetObjectVersionTagging",
            "s3:PutObjectVersionTagging",
            "s3:DeleteObject",
        ]
    )
    assert "s3:DeleteObjectVersion" not in objects["Action"]
    kms = s["ExportKeyThroughS3Only"]
    assert kms["Resource"] == KEY
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    token = s["MintAzureFederationToken"]
    assert token["Action"] == "sts:GetWebIdentityToken"
    assert token["Condition"] == {
        "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": ["api://AzureADTokenExchange"]},
        "NumericLessThanEquals": {"sts:DurationSeconds": 900},
        "StringEquals": {"sts:SigningAlgorithm": "RS256"},
    }


def test_no_wildcard_action_anywhere():
    docs = [
        policies.task_role_policy(bucket="b-1", prefix="p", kms_key_arn=KEY, region="eu-west-1", max_token_seconds=300),
        policies.execution_role_policy(
            repository_arn="arn:aws:ecr:eu-west-1:1:repository/r", log_group_arn="arn:aws:logs:eu-west-1:1:log-group:g"
        ),
        policies.scheduler_role_policy(
            task_definition_family_arns=["arn:aws:ecs:eu-west-1:1:task-definition/f"],
            cluster_arn="arn:aws:ecs:eu-west-1:1:cluster/c",
            pass_role_arns=["b", "a"],
            dlq_arn="arn:aws:sqs:eu-west-1:1:q",
        ),
    ]
    for doc in docs:
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not any(a.endswith("*") for a in actions), st


def test_trust_policy_has_confused_deputy_conditions():
    doc = policies.ecs_tasks_trust_policy("111122223333", "eu-west-1")
    (st,) = doc["Statement"]
    assert st["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert st["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "111122223333"},
        "ArnLike": {"aws:SourceArn": "arn:aws:ecs:eu-west-1:111122223333:*"},
    }


def test_scheduler_may_run_only_this_family_and_pass_only_two_roles():
    s = _by_sid(
        policies.scheduler_role_policy(
            task_definition_family_arns=["arn:aws:ecs:eu-west-1:1:task-definition/f"],
            cluster_arn="arn:aws:ecs:eu-west-1:1:cluster/c",
            pass_role_arns=["role-b", "role-a"],
            dlq_arn="arn:aws:sqs:eu-west-1:1:q",
        )
    )
    assert s["RunWorkerTask"]["Resource"] == [
        "arn:aws:ecs:eu-west-1:1:task-definition/f",
        "arn:aws:ecs:eu-west-1:1:task-definition/f:*",
    ]
    assert s["RunWorkerTask"]["Condition"] == {"ArnEquals": {"ecs:cluster": "arn:aws:ecs:eu-west-1:1:cluster/c"}}
    assert s["PassWorkerRoles"]["Resource"] == ["role-a", "role-b"]
    assert s["PassWorkerRoles"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


TASK = "arn:aws:iam::111122223333:role/cosmos-s3-export/dev/export-dev-task"
RESTORE = "arn:aws:iam::111122223333:role/cosmos-s3-export/dev/export-dev-restore"
ACCESS = policies.ExportAccess(read=(TASK,), write=(TASK,), delete=(TASK,))


def test_bucket_policy_denies_plain_http_and_foreign_encryption():
    s = _by_sid(policies.bucket_policy(bucket="b-1", kms_key_arn=KEY, access=ACCESS))
    assert set(s) == {
        "DenyInsecureTransport",
        "DenyPutWithOtherKey",
        "DenyPutNotKms",
        "OnlyReadersReadObjects",
        "OnlyWritersWriteObjects",
        "OnlyDeletersDeleteObjects",
    }
    tls = s["DenyInsecureTransport"]
    assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "s3:*")
    assert tls["Resource"] == ["arn:aws:s3:::b-1", "arn:aws:s3:::b-1/*"]
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert s["DenyPutWithOtherKey"]["Condition"]["StringNotEquals"] == {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY
    }
    assert s["DenyPutNotKms"]["Condition"]["StringNotEquals"] == {"s3:x-amz-server-side-encryption": "aws:kms"}


def test_bucket_policy_denies_object_reads_writes_deletes_to_all_but_the_listed_roles():
    s = _by_sid(policies.bucket_policy(bucket="b-1", kms_key_arn=KEY, access=ACCESS))
    for sid, actions in (
        ("OnlyReadersReadObjects", {"s3:GetObject", "s3:GetObjectVersion"}),
        ("OnlyWritersWriteObjects", {"s3:PutObject"}),
        ("OnlyDeletersDeleteObjects", {"s3:DeleteObject", "s3:DeleteObjectVersion"}),
    ):
        st = s[sid]
        assert (st["Effect"], st["Principal"], st["Resource"]) == ("Deny", "*", "arn:aws:s3:::b-1/*")
        assert actions <= set(st["Action"])
        assert st["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [TASK]}}


def test_adding_a_restore_role_is_one_arn_per_access_kind():
    access = policies.ExportAccess(read=(TASK, RESTORE), write=(TASK, RESTORE), delete=(TASK,))
    s = _by_sid(policies.bucket_policy(bucket="b-1", kms_key_arn=KEY, access=access))
    assert s["OnlyReadersReadObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == sorted([TASK, RESTORE])
    assert s["OnlyDeletersDeleteObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == [TASK]
    k = _by_sid(policies.kms_key_policy(account_id="111122223333", region="eu-west-1", bucket="b-1", access=access))
    assert k["ReadersAndWritersDecrypt"]["Condition"]["ArnEquals"]["aws:PrincipalArn"] == sorted([TASK, RESTORE])


def test_nobody_listed_means_denied_to_everyone():
    s = _by_sid(policies.bucket_policy(bucket="b-1", kms_key_arn=KEY, access=policies.ExportAccess(read=(TASK,))))
    assert "Condition" not in s["OnlyDeletersDeleteObjects"] and "Condition" not in s["OnlyWritersWriteObjects"]
    assert s["OnlyReadersReadObjects"]["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [TASK]}}


def test_key_policy_delegates_administration_but_not_use():
    doc = policies.kms_key_policy(account_id="111122223333", region="eu-west-1", bucket="b-1", access=ACCESS)
    s = _by_sid(doc)
    assert set(s) == {"KeyAdministrationThroughIam", "ReadersAndWritersDecrypt", "WritersEncrypt"}
    admin = s["KeyAdministrationThroughIam"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert "kms:*" not in admin["Action"] and "kms:PutKeyPolicy" in admin["Action"]
    # No cryptographic action and no grant (a grant would hand out decryption) through IAM.
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:CreateGrant"} & set(
        admin["Action"]
    )
    assert not any(a.endswith("*") for a in admin["Action"])
    for sid, actions in (
        ("ReadersAndWritersDecrypt", ["kms:Decrypt"]),
        ("WritersEncrypt", ["kms:Encrypt", "kms:GenerateDataKey"]),
    ):
        st = s[sid]
        assert st["Action"] == actions
        assert st["Condition"] == {
            "ArnEquals": {"aws:PrincipalArn": [TASK]},
            "StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com", "kms:CallerAccount": "111122223333"},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws:s3:::b-1", "arn:aws:s3:::b-1/*"]},
        }


def test_audit_trail_bucket_and_key_serve_only_their_trail():
    trail = "arn:aws:cloudtrail:eu-west-1:111122223333:trail/t"
    s = _by_sid(policies.audit_bucket_policy(bucket="b-1-audit", trail_arn=trail, trail_prefix="audit-trail"))
    assert s["CloudTrailWrite"]["Resource"] == "arn:aws:s3:::b-1-audit/audit-trail/*"
    assert s["CloudTrailWrite"]["Condition"]["StringEquals"]["aws:SourceArn"] == trail
    assert s["CloudTrailAclCheck"]["Action"] == "s3:GetBucketAcl"
    nobody = s["NobodyDeletesTheTrail"]
    assert (nobody["Effect"], nobody["Principal"], "Condition" in nobody) == ("Deny", "*", False)
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= set(nobody["Action"])
    k = _by_sid(policies.audit_key_policy(account_id="111122223333", trail_arn=trail))
    assert set(k) == {"KeyAdministrationThroughIam", "CloudTrailEncryptsThisTrail", "CloudTrailDescribesKey"}
    assert k["CloudTrailEncryptsThisTrail"]["Condition"] == {
        "StringEquals": {"aws:SourceArn": trail},
        "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": "arn:aws:cloudtrail:*:111122223333:trail/*"},
    }
    reader = "arn:aws:iam::111122223333:role/security-audit"
    k = _by_sid(policies.audit_key_policy(account_id="111122223333", trail_arn=trail, readers=(reader,)))
    assert k["AuditReadersDecrypt"]["Condition"]["ArnEquals"] == {"aws:PrincipalArn": [reader]}


def test_scheduler_trust_is_bound_to_the_schedule_group():
    (st,) = policies.scheduler_trust_policy("111122223333", "eu-west-1")["Statement"]
    assert st["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "111122223333"},
        "ArnEquals": {"aws:SourceArn": "arn:aws:scheduler:eu-west-1:111122223333:schedule-group/default"},
    }


def test_cosmos_scopes_per_container_or_database():
    acc = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/a"
    assert policies.cosmos_scopes(acc, "db", ["c1", "c2"], "container") == [
        f"{acc}/dbs/db/colls/c1",
        f"{acc}/dbs/db/colls/c2",
    ]
    assert policies.cosmos_scopes(acc, "db", ["c1", "c2"], "database") == [f"{acc}/dbs/db"]


def test_deterministic_guid_is_stable_and_input_sensitive():
    a = policies.deterministic_guid("acc", "/dbs/db/colls/c", "p")
    assert a == policies.deterministic_guid("acc", "/dbs/db/colls/c", "p")
    assert uuid.UUID(a).version == 5
    assert a != policies.deterministic_guid("acc", "/dbs/db/colls/d", "p")


def test_write_actions_detects_anything_beyond_the_four():
    assert policies.write_actions(list(contract.COSMOS_DATA_ACTIONS)) == []
    bad = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*"
    assert policies.write_actions([*contract.COSMOS_DATA_ACTIONS, bad]) == [bad]


def test_restore_role_writes_only_drills_and_restores_and_never_deletes():
    prefixes = policies.restore_write_prefixes(
        prefix="cosmos/prod", account="acme", database="orders", containers=["orders", "customers"]
    )
    assert prefixes == [
        "cosmos/prod/acme/orders/orders/drills/",
        "cosmos/prod/acme/orders/orders/restores/",
        "cosmos/prod/acme/orders/customers/drills/",
        "cosmos/prod/acme/orders/customers/restores/",
    ]
    doc = policies.restore_task_role_policy(
        bucket="b-1",
        prefix="cosmos/prod",
        write_prefixes=prefixes,
        kms_key_arn=KEY,
        region="eu-west-1",
        max_token_seconds=300,
    )
    s = _by_sid(doc)
    writes = {
        a
        for st in doc["Statement"]
        for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        if a in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging")
    }
    assert writes == {"s3:PutObject"}
    assert s["WriteDrillReportsAndRestoreProgress"]["Resource"] == [f"arn:aws:s3:::b-1/{p}*" for p in prefixes]
    assert all(
        "/data/" not in r and "/manifests/" not in r and not r.endswith("checkpoint.json")
        for r in s["WriteDrillReportsAndRestoreProgress"]["Resource"]
    )
    assert s["ReadExportObjects"]["Resource"] == "arn:aws:s3:::b-1/cosmos/prod/*"
    assert (
        s["MintAzureFederationToken"]
        == _by_sid(
            policies.task_role_policy(
                bucket="b-1", prefix="cosmos/prod", kms_key_arn=KEY, region="eu-west-1", max_token_seconds=300
            )
        )["MintAzureFederationToken"]
    )
