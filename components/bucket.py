"""The export bucket and its key (access allow-listed per role), lifecycle, Object Lock; the audit trail
in a bucket and key of its own that outlive the stack."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from . import naming, policies
from .analytics_config import RESULTS_PREFIX
from .config import BucketConfig, ObjectLock

AUDIT_PREFIX = "audit-trail"


class ExportBucket(pulumi.ComponentResource):
    key_arn: pulumi.Output[str]
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: BucketConfig,
        *,
        stack: str,
        account_id: str,
        region: str,
        access: policies.ExportAccess,
        audit_readers: tuple[str, ...] = (),
        results_expiry_days: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`access`: who may read, write and delete export objects (and use the key for it); nobody else
        can. `audit_readers`: roles that may decrypt the audit trail (none by default)."""
        super().__init__("cosmos-s3-export:storage:ExportBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Encrypts Cosmos DB exports in s3://{a.bucket_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(
                policies.kms_key_policy(account_id=account_id, region=region, bucket=a.bucket_name, access=access)
            ),
            # The deployer's policy manages only keys carrying its stack's tag.
            tags={naming.STACK_TAG: stack, naming.PURPOSE_TAG: "export"},
            opts=child,
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{a.bucket_name}", target_key_id=key.key_id, opts=child)

        bucket, versioning, after_block = self._bucket(
            name, a.bucket_name, key, object_lock=a.object_lock, force_destroy=a.force_destroy, opts=child
        )
        self._policy(
            name,
            bucket,
            key.arn.apply(
                lambda arn: json.dumps(policies.bucket_policy(bucket=a.bucket_name, kms_key_arn=arn, access=access))
            ),
            after_block,
        )
        rules: list[dict] = [
            {
                "id": "expire-exports",
                "status": "Enabled",
                "filter": {"prefix": f"{a.export_prefix}/"},
                "expiration": {"days": a.retention_days},
                "noncurrent_version_expiration": {"noncurrent_days": a.noncurrent_version_expiration_days},
                "abort_incomplete_multipart_upload": {"days_after_initiation": a.abort_incomplete_multipart_days},
                **(
                    {"transitions": [{"days": a.transition_days, "storage_class": a.transition_storage_class}]}
                    if a.transition_days
                    else {}
                ),
            }
        ]
        if results_expiry_days is not None:  # Athena's query results (components/analytics.py)
            rules.append(
                {
                    "id": "expire-athena-results",
                    "status": "Enabled",
                    "filter": {"prefix": f"{RESULTS_PREFIX}/"},
                    "expiration": {"days": results_expiry_days},
                    "noncurrent_version_expiration": {"noncurrent_days": 1},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                }
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=rules,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        if a.audit_trail:
            self._audit_trail(name, a, stack=stack, account_id=account_id, region=region, readers=audit_readers)

        self.key_arn = key.arn
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"keyArn": key.arn, "bucketName": bucket.bucket, "bucketArn": bucket.arn})

    def _bucket(
        self,
        name: str,
        bucket_name: str,
        key: aws.kms.Key,
        *,
        object_lock: ObjectLock | None,
        force_destroy: bool,
        opts: pulumi.ResourceOptions,
    ):
        """A versioned, SSE-KMS, private bucket with Object Lock where asked; returns (bucket, versioning,
        options that order a resource after the bucket's public-access block)."""
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=bucket_name,
            # Object Lock can only be chosen when the bucket is created.
            object_lock_enabled=object_lock is not None,
            force_destroy=force_destroy,
            opts=opts,
        )
        child = opts
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": key.arn,
                    },
                    "bucket_key_enabled": True,
                }
            ],
            opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        if object_lock is not None:
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-object-lock",
                bucket=bucket.id,
                object_lock_enabled="Enabled",
                rule={"default_retention": {"mode": object_lock.mode, "days": object_lock.days}},
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[versioning])),
            )
        # A policy put while the public-access block is being set can race it.
        return bucket, versioning, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[public_block]))

    def _policy(self, name: str, bucket: aws.s3.Bucket, policy: pulumi.Input[str], after: pulumi.ResourceOptions):
        return aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=policy, opts=after)

    def _audit_trail(
        self, name: str, a: BucketConfig, *, stack: str, account_id: str, region: str, readers: tuple[str, ...]
    ) -> None:
        """Data events of the export prefix, in their own bucket and key, kept when the stack is destroyed."""
        trail_name = naming.trail_name(a.bucket_name)
        audit_name = naming.audit_bucket_name(a.bucket_name)
        # Known before the trail exists, so the key and bucket policies can name it.
        trail_arn = f"arn:aws:cloudtrail:{region}:{account_id}:trail/{trail_name}"
        # retain_on_delete: `pulumi destroy` (and dev's forceDestroy) leaves the audit trail in place;
        # the deployer's IAM policy cannot delete it either (bootstrap/deployer.py).
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        key = aws.kms.Key(
            f"{name}-audit-key",
            description=f"Encrypts the audit trail of s3://{a.bucket_name} in s3://{audit_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(policies.audit_key_policy(account_id=account_id, trail_arn=trail_arn, readers=readers)),
            tags={naming.STACK_TAG: stack, naming.PURPOSE_TAG: "audit"},
            opts=kept,
        )
        aws.kms.Alias(f"{name}-audit-key-alias", name=f"alias/{audit_name}", target_key_id=key.key_id, opts=kept)
        bucket, versioning, after_block = self._bucket(
            f"{name}-audit", audit_name, key, object_lock=a.object_lock, force_destroy=False, opts=kept
        )
        policy = self._policy(
            f"{name}-audit",
            bucket,
            json.dumps(policies.audit_bucket_policy(bucket=audit_name, trail_arn=trail_arn, trail_prefix=AUDIT_PREFIX)),
            after_block,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-audit-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-audit-trail",
                    "status": "Enabled",
                    "filter": {"prefix": f"{AUDIT_PREFIX}/"},
                    "expiration": {"days": a.audit_retention_days},
                    "noncurrent_version_expiration": {"noncurrent_days": a.noncurrent_version_expiration_days},
                }
            ],
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(depends_on=[versioning])),
        )
        aws.cloudtrail.Trail(
            f"{name}-trail",
            name=trail_name,
            s3_bucket_name=bucket.id,
            s3_key_prefix=AUDIT_PREFIX,
            kms_key_id=key.arn,
            include_global_service_events=False,
            is_multi_region_trail=False,
            enable_log_file_validation=True,
            advanced_event_selectors=[
                {
                    "name": "export-object-events",
                    "field_selectors": [
                        {"field": "eventCategory", "equals": ["Data"]},
                        {"field": "resources.type", "equals": ["AWS::S3::Object"]},
                        {
                            "field": "resources.ARN",
                            "starts_withs": [f"arn:aws:s3:::{a.bucket_name}/{a.export_prefix}/"],
                        },
                    ],
                }
            ],
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(depends_on=[policy])),
        )
