"""Re-read a committed run's parts and check them against its manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from cosmos_export import jsonl, layout, storage
from cosmos_export.commit import CommitStore, Manifest
from cosmos_export.contract import Meta


class RunNotCommittedError(LookupError):
    pass


@dataclass(frozen=True)
class Mismatch:
    key: str
    check: str  # "bytes" | "sha256" | "documents" | "missing" | "unreadable" | "tag:<name>"
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.key}: {self.check} expected {self.expected}, got {self.actual}"


@dataclass
class VerifyReport:
    run_id: str
    sequence: int
    parts_checked: int = 0
    documents: int = 0
    bytes: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _count_lines(body: Any, compression: jsonl.Compression, sha: "hashlib._Hash") -> tuple[int, int, bool]:
    """(compressed bytes, newline count, ends with newline) streaming through ``body``."""

    class _Tee:
        size = 0

        def read(self, n: int = -1) -> bytes:
            data = body.read(n)
            sha.update(data)
            _Tee.size += len(data)
            return data

    lines, last = 0, b"\n"
    for chunk in jsonl.iter_decompressed(_Tee(), compression):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    return _Tee.size, lines, last == b"\n"


def verify_run(s3_client: Any, target: layout.ExportTarget, run_id: str, *, check_tags: bool = True) -> VerifyReport:
    store = CommitStore(s3_client, target)
    bucket = storage.Bucket(s3_client, target.bucket)
    manifests = [m for m in store.committed_manifests() if m.run_id == run_id]
    if not manifests:
        raise RunNotCommittedError(
            f"run {run_id} has no committed manifest under s3://{target.bucket}/{target.manifests_prefix}: "
            f"pass the run id of a committed run (see the manifests' run_id field)"
        )
    manifest: Manifest = manifests[0]
    report = VerifyReport(run_id=run_id, sequence=manifest.sequence)
    for part in manifest.parts:
        try:
            response = bucket.open(part.key, part.version_id)
        except ClientError as exc:
            report.mismatches.append(
                Mismatch(part.key, "missing", "object present", storage.error_code(exc) or "error")
            )
            continue
        sha = hashlib.sha256()
        try:
            size, lines, complete = _count_lines(response["Body"], jsonl.compression_of_key(part.key), sha)
        except Exception as exc:  # corrupt compression is a finding, not a crash
            report.mismatches.append(Mismatch(part.key, "unreadable", "valid compressed JSON Lines", str(exc)))
            continue
        report.parts_checked += 1
        report.documents += lines
        report.bytes += size
        actual = {"bytes": size, "sha256": sha.hexdigest(), "documents": lines}
        for check, value in actual.items():
            expected = getattr(part, check)
            if value != expected:
                report.mismatches.append(Mismatch(part.key, check, str(expected), str(value)))
        if not complete:
            report.mismatches.append(Mismatch(part.key, "last-line", "ends with newline", "truncated line"))
        if check_tags:
            tags = bucket.tags(part.key, part.version_id)
            for name, expected in (
                (Meta.DOCUMENT_COUNT, str(part.documents)),
                (Meta.SHA256, part.sha256),
                (Meta.SCHEMA_VERSION, str(part.schema_version)),
            ):
                if tags.get(name) != expected:
                    report.mismatches.append(Mismatch(part.key, f"tag:{name}", expected, str(tags.get(name))))
    return report
