"""A realistic compliant stack, as the engine hands it to the stack policy (camelCase)."""

from __future__ import annotations

import copy
import json

from cosmos_export import contract
from policy.rules import Resource

ACCOUNT = "123456789012"
ISSUER = "https://0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b.tokens.sts.global.api.aws"
BUCKET = "acme-cosmos-export-dev"
PREFIX = "exports/dev"
KEY_ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TASK_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/export-task-0a1b2c3"
EXEC_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/export-execution-9f8e7d6"
SP_OBJECT_ID = "7d3c1f0e-2a4b-4c6d-8e9f-0a1b2c3d4e5f"
COSMOS_ACCOUNT_ID = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/data-rg/providers/"
    "Microsoft.DocumentDB/databaseAccounts/acme-cosmos"
)
ROLE_DEF_ID = f"{COSMOS_ACCOUNT_ID}/sqlRoleDefinitions/5b3f6c1e-1c2d-5e3f-9a4b-6c7d8e9f0a1b"


def task_role_policy() -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListExportPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{BUCKET}",
                "Condition": {"StringLike": {"s3:prefix": [PREFIX, f"{PREFIX}/*"]}},
            },
            {
                "Sid": "ReadWriteExportObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
            },
            {
                "Sid": "ExportKeyThroughS3Only",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": KEY_ARN,
                "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}},
            },
            {
                "Sid": "MintAzureFederationToken",
                "Effect": "Allow",
                "Action": "sts:GetWebIdentityToken",
                "Resource": "*",
                "Condition": {
                    "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": [contract.TOKEN_EXCHANGE_AUDIENCE]},
                    "NumericLessThanEquals": {"sts:DurationSeconds": 900},
                    "StringEquals": {"sts:SigningAlgorithm": "RS256"},
                },
            },
        ],
    }


def key_policy() -> dict:
    """The program's own key policy builder: administration through IAM, use by the task role only."""
    from components import policies

    access = policies.ExportAccess(read=(TASK_ROLE_ARN,), write=(TASK_ROLE_ARN,), delete=(TASK_ROLE_ARN,))
    return policies.kms_key_policy(account_id=ACCOUNT, region="eu-west-1", bucket=BUCKET, access=access)


def bucket_policy() -> dict:
    arn = f"arn:aws:s3:::{BUCKET}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def container(**overrides) -> dict:
    c = {
        "name": "worker",
        "image": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/export@sha256:" + "ab" * 32,
        "essential": True,
        "user": "10001:10001",
        "readonlyRootFilesystem": True,
        "environment": [
            {"name": contract.Env.BUCKET, "value": BUCKET},
            {"name": contract.Env.PREFIX, "value": PREFIX},
            {"name": contract.Env.KMS_KEY_ARN, "value": KEY_ARN},
            {"name": contract.Env.TOKEN_DURATION_SECONDS, "value": "300"},
            {"name": contract.Env.AZURE_CLIENT_ID, "value": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"},
            {"name": contract.Env.COSMOS_DATABASE, "value": "app"},
            {"name": contract.Env.COSMOS_CONTAINERS, "value": "orders"},
        ],
    }
    c.update(overrides)
    return c


TOPIC_ARN = "arn:aws:sns:eu-west-1:111122223333:export-alerts-1a2b3c4"
ALERTS_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/5c0c2d6e-1111-4a5b-9c8d-7e6f5a4b3c2d"


def topic_policy() -> dict:
    from components.alerting import topic_policy as build

    return build(topic_arn=TOPIC_ARN, account_id="111122223333", region="eu-west-1")


def good_stack() -> list[Resource]:
    R = Resource
    return copy.deepcopy(
        [
            R(
                "aws:kms/key:Key",
                "key",
                {"arn": KEY_ARN, "enableKeyRotation": True, "policy": json.dumps(key_policy())},
            ),
            R("aws:s3/bucket:Bucket", "bucket", {"bucket": BUCKET, "id": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"}),
            R(
                "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                "pab",
                {
                    "bucket": BUCKET,
                    "blockPublicAcls": True,
                    "blockPublicPolicy": True,
                    "ignorePublicAcls": True,
                    "restrictPublicBuckets": True,
                },
            ),
            R(
                "aws:s3/bucketPolicy:BucketPolicy",
                "bucket-policy",
                {"bucket": BUCKET, "policy": json.dumps(bucket_policy())},
            ),
            R(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                "sse",
                {
                    "bucket": BUCKET,
                    "rules": [
                        {
                            "applyServerSideEncryptionByDefault": {
                                "sseAlgorithm": "aws:kms",
                                "kmsMasterKeyId": KEY_ARN,
                            },
                            "bucketKeyEnabled": True,
                        }
                    ],
                },
            ),
            R(
                "aws:iam/outboundWebIdentityFederation:OutboundWebIdentityFederation",
                "federation",
                {"issuerIdentifier": ISSUER},
            ),
            R(
                "aws:iam/role:Role",
                "task-role",
                {"arn": TASK_ROLE_ARN, "name": "export-task-0a1b2c3", "id": "export-task-0a1b2c3"},
            ),
            R(
                "aws:iam/rolePolicy:RolePolicy",
                "task-role-policy",
                {"role": "export-task-0a1b2c3", "policy": json.dumps(task_role_policy())},
            ),
            R("aws:iam/role:Role", "execution-role", {"arn": EXEC_ROLE_ARN, "name": "export-execution-9f8e7d6"}),
            R(
                "aws:ecs/taskDefinition:TaskDefinition",
                "task",
                {
                    "taskRoleArn": TASK_ROLE_ARN,
                    "executionRoleArn": EXEC_ROLE_ARN,
                    "containerDefinitions": json.dumps([container()]),
                },
            ),
            R("azuread:index/servicePrincipal:ServicePrincipal", "sp", {"objectId": SP_OBJECT_ID}),
            R(
                "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential",
                "fic",
                {"issuer": ISSUER, "subject": TASK_ROLE_ARN, "audiences": [contract.TOKEN_EXCHANGE_AUDIENCE]},
            ),
            R(
                "azure-native:cosmosdb:SqlResourceSqlRoleDefinition",
                "role-def",
                {
                    "id": ROLE_DEF_ID,
                    "type": "CustomRole",
                    "permissions": [{"dataActions": list(contract.COSMOS_DATA_ACTIONS)}],
                },
            ),
            R(
                "azure-native:cosmosdb:SqlResourceSqlRoleAssignment",
                "assignment",
                {
                    "principalId": SP_OBJECT_ID,
                    "roleDefinitionId": ROLE_DEF_ID,
                    "scope": f"{COSMOS_ACCOUNT_ID}/dbs/app/colls/orders",
                },
            ),
            R("aws:sns/topic:Topic", "alerts", {"arn": TOPIC_ARN, "kmsMasterKeyId": ALERTS_KEY_ARN}),
            R(
                "aws:sns/topicPolicy:TopicPolicy",
                "alerts-policy",
                {"arn": TOPIC_ARN, "policy": json.dumps(topic_policy())},
            ),
            R(
                "aws:cloudwatch/metricAlarm:MetricAlarm",
                "stale-orders",
                {
                    "namespace": "CosmosExport",
                    "metricName": "Success",
                    "treatMissingData": "breaching",
                    "alarmActions": [TOPIC_ARN],
                },
            ),
            R(
                "aws:cloudwatch/eventRule:EventRule",
                "task-failed",
                {"eventPattern": json.dumps({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"]})},
            ),
        ]
    )


def replace(stack: list[Resource], key: str, **props) -> list[Resource]:
    """A copy of `stack` with resource `key`'s props updated."""
    return [Resource(r.type, r.key, {**r.props, **props}, r.deps) if r.key == key else r for r in stack]


RESTORE_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/cosmos-s3-export/export-restore-task-1b2c3d4"
RESTORE_SP_OBJECT_ID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
RESTORE_ROLE_DEF_ID = f"{COSMOS_ACCOUNT_ID}/sqlRoleDefinitions/6c4e7d2f-2d3e-5f4a-8b5c-7d8e9f0a1b2c"


def restore_task_role_policy() -> dict:
    root = f"arn:aws:s3:::{BUCKET}/{PREFIX}/acme-cosmos/app/orders"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadExportObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
            },
            {
                "Sid": "WriteDrillReportsAndRestoreProgress",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"{root}/drills/*", f"{root}/restores/*"],
            },
            task_role_policy()["Statement"][-1],
        ],
    }


def restore_stack() -> list[Resource]:
    """good_stack() plus a compliant restore identity: its own role, task, SP, writer role on one target."""
    R = Resource
    env = container()["environment"] + [
        {"name": contract.Env.RESTORE_TARGET_DATABASE, "value": "restore-drills"},
        {"name": contract.Env.RESTORE_TARGETS, "value": "orders=orders-drill"},
    ]
    return good_stack() + copy.deepcopy(
        [
            R(
                "aws:iam/role:Role",
                "restore-role",
                {"arn": RESTORE_ROLE_ARN, "name": "export-restore-task-1b2c3d4", "id": "export-restore-task-1b2c3d4"},
            ),
            R(
                "aws:iam/rolePolicy:RolePolicy",
                "restore-role-policy",
                {"role": "export-restore-task-1b2c3d4", "policy": json.dumps(restore_task_role_policy())},
            ),
            R(
                "aws:ecs/taskDefinition:TaskDefinition",
                "restore-task",
                {
                    "taskRoleArn": RESTORE_ROLE_ARN,
                    "executionRoleArn": EXEC_ROLE_ARN,
                    "containerDefinitions": json.dumps([container(command=["drill"], environment=env)]),
                },
            ),
            R("azuread:index/servicePrincipal:ServicePrincipal", "restore-sp", {"objectId": RESTORE_SP_OBJECT_ID}),
            R(
                "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential",
                "restore-fic",
                {"issuer": ISSUER, "subject": RESTORE_ROLE_ARN, "audiences": [contract.TOKEN_EXCHANGE_AUDIENCE]},
            ),
            R(
                "azure-native:cosmosdb:SqlResourceSqlRoleDefinition",
                "restore-role-def",
                {
                    "id": RESTORE_ROLE_DEF_ID,
                    "type": "CustomRole",
                    "permissions": [{"dataActions": list(contract.COSMOS_RESTORE_DATA_ACTIONS)}],
                },
            ),
            R(
                "azure-native:cosmosdb:SqlResourceSqlRoleAssignment",
                "restore-assignment",
                {
                    "principalId": RESTORE_SP_OBJECT_ID,
                    "roleDefinitionId": RESTORE_ROLE_DEF_ID,
                    "scope": f"{COSMOS_ACCOUNT_ID}/dbs/restore-drills/colls/orders-drill",
                },
            ),
        ]
    )
