"""Every S3 call the worker makes, and what an S3 error means: one typed module.

The commit protocol (commit.py), the part writer (sink.py), verify and doctor
reach S3 only through `Bucket`, so the calls the task role must allow
(tests/infra/test_task_role_covers_worker.py reads them from here) and the
classification of S3's errors (missing, lost a conditional write) have one
home. Conditional writes: If-None-Match "*" (put only if absent) and If-Match
<etag> (put only if unchanged); S3 answers 412 PreconditionFailed, or 409
ConditionalRequestConflict when it saw a concurrent conditional write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:  # the client's real types (mypy-boto3-s3, a test-time dependency)
    import boto3
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, GetObjectOutputTypeDef

    from cosmos_export.settings import WorkerSettings
else:
    S3Client = Any


def client_config(max_attempts: int = 10) -> Config:
    """Client config for export writes: standard retries cover 5xx, SlowDown and resets."""
    return Config(retries={"mode": "standard", "max_attempts": max_attempts}, tcp_keepalive=True)


# --- What an error means ----------------------------------------------------------


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional write lost: the key exists (If-None-Match) or changed (If-Match)."""
    return isinstance(exc, ClientError) and (
        _status(exc) in (409, 412) or error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")
    )


def is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and (_status(exc) == 404 or error_code(exc) in ("NoSuchKey", "404", "NotFound"))


def _version(version_id: str | None) -> dict[str, Any]:
    # An unversioned bucket's "null" version is named by the key alone (moto refuses VersionId=null).
    return {"VersionId": version_id} if version_id and version_id != "null" else {}


# --- The calls ------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    key: str
    last_modified: datetime


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: datetime


class Bucket:
    """One bucket, through a boto3 S3 client (the task role's credentials)."""

    def __init__(self, client: S3Client, name: str) -> None:
        self.client = client
        self.name = name

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    # reading

    def get(self, key: str) -> tuple[bytes, str] | None:
        """(body, ETag) of the current version, or None when there is no such key."""
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def open(self, key: str, version_id: str | None = None) -> GetObjectOutputTypeDef:
        """The object's response (stream its "Body"); raises ClientError (see is_missing)."""
        return self.client.get_object(Bucket=self.name, Key=key, **_version(version_id))

    def size(self, key: str, version_id: str | None = None) -> int:
        return self.client.head_object(Bucket=self.name, Key=key, **_version(version_id))["ContentLength"]

    def tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        response = self.client.get_object_tagging(Bucket=self.name, Key=key, **_version(version_id))
        return {t["Key"]: t["Value"] for t in response["TagSet"]}

    def objects(self, prefix: str) -> Iterator[Listed]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield Listed(obj["Key"], obj["LastModified"])

    def uploads(self, prefix: str) -> Iterator[Upload]:
        """Unfinished multipart uploads under `prefix`."""
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.name, Prefix=prefix):
            for upload in page.get("Uploads", []):
                yield Upload(upload["Key"], upload["UploadId"], upload["Initiated"])

    # writing

    def put(self, key: str, body: bytes, *, content_type: str | None = None, kms_key_arn: str | None = None) -> str:
        """Write unconditionally; returns the ETag."""
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        if kms_key_arn:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_arn)
        return self.client.put_object(Bucket=self.name, Key=key, Body=body, **extra)["ETag"]

    def put_if_absent(self, key: str, body: bytes, content_type: str) -> str:
        """Write only if `key` does not exist; returns the ETag. A lost race: see is_precondition_failed."""
        return self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")[
            "ETag"
        ]

    def put_if_match(self, key: str, body: bytes, content_type: str, etag: str) -> str:
        """Replace `key` only if its ETag is still `etag`; returns the new ETag."""
        return self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type, IfMatch=etag)[
            "ETag"
        ]

    def set_tags(self, key: str, tags: dict[str, str], version_id: str | None = None) -> None:
        self.client.put_object_tagging(
            Bucket=self.name,
            Key=key,
            **_version(version_id),
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def delete_many(self, keys: Sequence[str]) -> list[tuple[str, str, str]]:
        """Delete up to 1000 keys in one request; (key, code, message) of each key S3 did not delete."""
        response = self.client.delete_objects(
            Bucket=self.name, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        return [(e.get("Key", ""), e.get("Code", ""), e.get("Message", "")) for e in response.get("Errors", [])]

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)

    def start_upload(
        self, key: str, *, content_type: str, metadata: dict[str, str], kms_key_arn: str | None
    ) -> MultipartUpload:
        extra: dict[str, Any] = {}
        if kms_key_arn:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_arn, BucketKeyEnabled=True)
        response = self.client.create_multipart_upload(
            Bucket=self.name, Key=key, ContentType=content_type, Metadata=metadata, **extra
        )
        return MultipartUpload(self, key, response["UploadId"])


@dataclass
class MultipartUpload:
    """One object being written in chunks; nothing is visible until complete()."""

    bucket: Bucket
    key: str
    upload_id: str
    parts: list[CompletedPartTypeDef] = field(default_factory=list)

    def upload(self, chunk: bytes | bytearray) -> None:
        number = len(self.parts) + 1
        response = self.bucket.client.upload_part(
            Bucket=self.bucket.name,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=chunk,  # type: ignore[arg-type]  # botocore takes a bytearray too (validate.py: bytes, bytearray, str)
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def complete(self) -> str | None:
        """Make the object visible; its version id (None in an unversioned bucket)."""
        response = self.bucket.client.complete_multipart_upload(
            Bucket=self.bucket.name, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        version_id = response.get("VersionId")
        return None if version_id in (None, "null") else version_id

    def abort(self) -> None:
        self.bucket.abort_upload(self.key, self.upload_id)


def client(settings: WorkerSettings, session: boto3.Session) -> S3Client:
    """The worker's S3 client: the task role's credentials, the regional (or overridden) endpoint."""
    return session.client(
        "s3", region_name=settings.aws_region, endpoint_url=settings.s3_endpoint, config=client_config()
    )
