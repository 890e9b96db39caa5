"""The export bucket: KMS key, bucket and its hardening, lifecycle, Object Lock, audit trail."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from . import policies
from .config import BucketConfig

AUDIT_PREFIX = "audit-trail"


class ExportBucket(pulumi.ComponentResource):
    key_arn: pulumi.Output[str]
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: BucketConfig, *, account_id: str, region: str,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:storage:ExportBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        trail_name = f"{a.bucket_name}-writes"
        # Known before the trail exists, so the key and bucket policies can name it.
        trail_arn = f"arn:aws:cloudtrail:{region}:{account_id}:trail/{trail_name}" if a.audit_trail else None

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Encrypts Cosmos DB exports in s3://{a.bucket_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(policies.kms_key_policy(account_id=account_id, trail_arn=trail_arn)),
            opts=child,
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{a.bucket_name}", target_key_id=key.key_id, opts=child)

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=a.bucket_name,
            # Object Lock can only be chosen when the bucket is created.
            object_lock_enabled=a.object_lock is not None,
            force_destroy=a.force_destroy,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id,
            versioning_configuration={"status": "Enabled"}, opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id,
            rules=[{
                "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn},
                "bucket_key_enabled": True,
            }],
            opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block", bucket=bucket.id,
            block_public_acls=True, block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child,
        )
        bucket_policy = aws.s3.BucketPolicy(
            f"{name}-policy", bucket=bucket.id,
            policy=key.arn.apply(lambda arn: json.dumps(policies.bucket_policy(
                bucket=a.bucket_name, kms_key_arn=arn,
                trail_arn=trail_arn, trail_prefix=AUDIT_PREFIX if trail_arn else None,
            ))),
            # A policy put while the public-access block is being set can race it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]),
        )
        rules = [{
            "id": "expire-exports",
            "status": "Enabled",
            "filter": {"prefix": f"{a.export_prefix}/"},
            "expiration": {"days": a.retention_days},
            "noncurrent_version_expiration": {"noncurrent_days": a.noncurrent_version_expiration_days},
            "abort_incomplete_multipart_upload": {"days_after_initiation": a.abort_incomplete_multipart_days},
            **({"transitions": [{"days": a.transition_days, "storage_class": a.transition_storage_class}]}
               if a.transition_days else {}),
        }]
        if a.audit_trail:
            rules.append({
                "id": "expire-audit-trail",
                "status": "Enabled",
                "filter": {"prefix": f"{AUDIT_PREFIX}/"},
                "expiration": {"days": max(a.retention_days, 365)},
                "noncurrent_version_expiration": {"noncurrent_days": a.noncurrent_version_expiration_days},
            })
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id, rules=rules,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        if a.object_lock is not None:
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-object-lock", bucket=bucket.id, object_lock_enabled="Enabled",
                rule={"default_retention": {"mode": a.object_lock.mode, "days": a.object_lock.days}},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
            )
        if a.audit_trail:
            # Data events for every object write/read under the export prefix.
            aws.cloudtrail.Trail(
                f"{name}-trail",
                name=trail_name,
                s3_bucket_name=bucket.id,
                s3_key_prefix=AUDIT_PREFIX,
                kms_key_id=key.arn,
                include_global_service_events=False,
                is_multi_region_trail=False,
                enable_log_file_validation=True,
                advanced_event_selectors=[{
                    "name": "export-object-events",
                    "field_selectors": [
                        {"field": "eventCategory", "equals": ["Data"]},
                        {"field": "resources.type", "equals": ["AWS::S3::Object"]},
                        {"field": "resources.ARN", "starts_withs": [f"arn:aws:s3:::{a.bucket_name}/{a.export_prefix}/"]},
                    ],
                }],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[bucket_policy]),
            )

        self.key_arn = key.arn
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"keyArn": key.arn, "bucketName": bucket.bucket, "bucketArn": bucket.arn})
