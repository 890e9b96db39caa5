"""Streaming writer of one feed range's JSON Lines parts to S3.

Documents are serialized and compressed as they arrive; compressed bytes are
uploaded as multipart-upload chunks as soon as one chunk (>= 5 MiB, the S3
minimum for all but the last part) is full. So a sink holds at most one chunk
plus one batch, whatever the container size. When an object's compressed size
reaches ``part_size_bytes`` the upload is completed and the next document
starts a new object. A failure aborts the open upload before re-raising, so a
partial object is never completed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from cosmos_export import audit, jsonl, layout, metrics, passthrough, storage
from cosmos_export.commit import ManifestPart
from cosmos_export.contract import MANIFEST_FORMAT_VERSION, Meta
from cosmos_export.schema import SchemaInfo, SchemaTracker, next_schema

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIN_CHUNK_BYTES = 5 * 1024 * 1024
#: 6 MiB rather than 8: two sinks each hold up to one chunk at 1M documents, and 8 MiB put the 1M peak
#: RSS at 183 MB against 157 at 100k, 6 MiB at 166 (2026-12-07; target: at most 1.2x).
DEFAULT_CHUNK_BYTES = 6 * 1024 * 1024
#: Uncompressed bytes serialized before handing them to the compressor.
BATCH_BYTES = 256 * 1024


class _OpenPart:
    """One object being written: its multipart upload and running totals."""

    def __init__(self, upload: storage.MultipartUpload, compressor: jsonl.Compressor) -> None:
        self.upload = upload
        self.key = upload.key
        self.compressor = compressor
        self.buffer = bytearray()
        self.sha256 = hashlib.sha256()
        self.bytes = 0  # compressed bytes produced so far (uploaded + buffered)
        self.uncompressed = 0
        self.documents = 0
        self.schema = SchemaTracker()
        #: The shapes of the raw documents written to this part so far (their schema: `model.pairs()`).
        self.model = passthrough.ShapeModel()


class FeedRangeSink:
    def __init__(
        self,
        s3_client: S3Client,
        target: layout.ExportTarget,
        *,
        run_id: str,
        started_at: datetime,
        feed_range: str,
        feed_range_index: int,
        compression: jsonl.Compression,
        part_size_bytes: int,
        kms_key_arn: str | None,
        schema: SchemaTracker,
        log: audit.Logger | None,
        previous_schema: SchemaInfo | None = None,
        compression_level: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        jsonl.check_compression(compression)
        if part_size_bytes < 1:
            raise ValueError(f"part_size_bytes={part_size_bytes} must be positive: use e.g. 128 MiB")
        if chunk_bytes < MIN_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes={chunk_bytes} is below the S3 minimum part size {MIN_CHUNK_BYTES} (5 MiB)")
        jsonl.new_compressor(compression, compression_level)  # validate the level now, not mid-run
        self._bucket = storage.Bucket(s3_client, target.bucket)
        self._target = target
        self._run_id = run_id
        self._started_at = started_at
        self._feed_range = feed_range
        self._index = feed_range_index
        self._compression = compression
        self._level = compression_level
        self._part_size = part_size_bytes
        self._chunk = chunk_bytes
        self._kms = kms_key_arn
        self._schema = schema
        self._previous_schema = previous_schema
        self._log = audit.as_logger(log, __name__)
        self._part: _OpenPart | None = None
        self._next_number = 1
        self._records: list[ManifestPart] = []
        self._closed = False
        #: Largest number of compressed bytes held in memory at once (for tests/metrics).
        self.peak_buffered_bytes = 0
        self._newest_ts: int | None = None

    # -- public ----------------------------------------------------------

    def write_page(self, docs: list[dict] | list[msgspec.Raw]) -> None:
        """Write a page's documents: parsed (dicts), or as read in raw mode (`msgspec.Raw`, see passthrough.py)."""
        if self._closed:
            raise RuntimeError(f"sink for feed range {self._index} is closed: create a new sink per run")
        try:
            if docs and type(docs[0]) is msgspec.Raw:
                self._write_raw(docs)  # a raw page is raw throughout (sdk_json)
            else:
                self._write(docs)  # type: ignore[arg-type]  # a parsed page: dicts throughout
                self._add_ts(metrics.newest_ts(docs))
        except BaseException:
            self.abort()
            raise

    def close(self) -> list[ManifestPart]:
        if not self._closed:
            try:
                if self._part is not None:
                    self._finish_part()
            except BaseException:
                self.abort()
                raise
            self._closed = True
        return list(self._records)

    @property
    def newest_ts(self) -> int | None:
        """The newest Cosmos `_ts` among the documents written so far (metrics.newest_ts's rules)."""
        newest = self._newest_ts
        if self._part is not None and self._part.model.newest_ts is not None:
            newest = max(newest or 0, self._part.model.newest_ts)
        return newest

    def _add_ts(self, ts: int | None) -> None:
        if ts is not None and (self._newest_ts is None or ts > self._newest_ts):
            self._newest_ts = ts

    def abort(self) -> None:
        """Abort the open multipart upload (completed objects stay, uncommitted)."""
        self._closed = True
        part, self._part = self._part, None
        if part is None:
            return
        try:
            part.upload.abort()
        except Exception as exc:  # the original failure matters more; lifecycle cleans the rest
            self._log.warning("abort_multipart_upload_failed", key=part.key, error=str(exc))

    # -- internals -------------------------------------------------------

    def _write(self, docs: list[dict]) -> None:
        # Schema and float check for the whole page at once (column-wise, see SchemaTracker.observe_page).
        page = SchemaTracker()
        fast = page.observe_page(docs)
        first = 0  # index of the current part's first document in this page
        lines: list[bytes] = []
        size = 0
        for index, doc in enumerate(docs):
            part = self._part
            if part is None:
                part = self._open_part()
                first = index
            line = jsonl.line_bytes(doc, fast[index])
            lines.append(line)
            size += len(line) + 1
            part.documents += 1
            if size >= BATCH_BYTES:
                self._feed(lines, size)
                lines, size = [], 0
                if part.bytes >= self._part_size:
                    self._observe(part, docs, first, index + 1, page)
                    self._finish_part()
        if lines:
            self._feed(lines, size)
        part = self._part
        if part is not None and docs:  # the page's last documents went to a part still open
            self._observe(part, docs, first, len(docs), page)
            if part.bytes >= self._part_size:
                self._finish_part()

    def _write_raw(self, raws: list[msgspec.Raw]) -> None:
        """A raw page, document by document: each one's part learns its shape (its schema) as it goes."""
        lines: list[bytes | msgspec.Raw] = []  # both are buffers: joined by bytes.join
        size = 0
        part = self._part
        for raw in raws:
            if part is None:
                part = self._open_part()
            line: bytes | msgspec.Raw | None = part.model.line(raw)
            if line is None:
                line = passthrough.slow_line(raw, part.model)
            lines.append(line)
            size += len(line) + 1
            if size >= BATCH_BYTES:
                part.documents += len(lines)  # every line of a batch is in the open part
                self._feed(lines, size)
                lines, size = [], 0
                if part.bytes >= self._part_size:
                    self._finish_part()
                    part = None
        if lines:
            self._open().documents += len(lines)
            self._feed(lines, size)
        last = self._part
        if last is not None and last.bytes >= self._part_size:
            self._finish_part()

    @staticmethod
    def _observe(part: _OpenPart, docs: list[dict], first: int, end: int, page: SchemaTracker) -> None:
        """A part's schema holds exactly its own documents' paths (its tag's schema version depends on it)."""
        if first == 0 and end == len(docs):
            part.schema.merge(page)
        else:  # the page spans two parts (once per part): observe each share on its own
            part.schema.observe_page(docs[first:end])

    def _open(self) -> _OpenPart:
        """The part being written (writing a document opens one first)."""
        assert self._part is not None, "no part is open"
        return self._part

    def _feed(self, lines: list[bytes], size: int) -> None:
        part = self._open()
        lines.append(b"")
        out = part.compressor.compress(b"\n".join(lines))
        part.uncompressed += size
        self._buffer(part, out)

    def _buffer(self, part: _OpenPart, data: bytes) -> None:
        if not data:
            return
        part.buffer += data
        part.sha256.update(data)
        part.bytes += len(data)
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, len(part.buffer))
        if len(part.buffer) >= self._chunk:
            # The whole buffer is the next S3 part (at least one chunk; parts need not be equal), handed over
            # without a copy: a sink holds one chunk while it uploads, not the chunk and copies of it.
            chunk, part.buffer = part.buffer, bytearray()
            self._upload(part, chunk)

    def _upload(self, part: _OpenPart, chunk: bytes | bytearray) -> None:
        part.upload.upload(chunk)

    def _open_part(self) -> _OpenPart:
        key = layout.part_key(
            self._target,
            run_id=self._run_id,
            started_at=self._started_at,
            feed_range_index=self._index,
            part_number=self._next_number,
            compression=self._compression,
        )
        upload = self._bucket.start_upload(
            key,
            content_type=jsonl.content_type(self._compression),
            metadata={
                Meta.RUN_ID: self._run_id,
                Meta.ACCOUNT: self._target.account,
                Meta.DATABASE: self._target.database,
                Meta.CONTAINER: self._target.container,
                Meta.FEED_RANGE: self._feed_range,
                Meta.FORMAT_VERSION: str(MANIFEST_FORMAT_VERSION),
            },
            kms_key_arn=self._kms,
        )
        self._part = _OpenPart(upload, jsonl.new_compressor(self._compression, self._level))
        self._next_number += 1
        return self._part

    def _finish_part(self) -> None:
        part = self._open()
        self._buffer(part, part.compressor.flush())
        if part.buffer or not part.upload.parts:
            self._upload(part, bytes(part.buffer))
            part.buffer.clear()
        # An unversioned (or versioning-suspended) bucket has only the "null" version: record no version id.
        # Part keys are unique per run, so the key alone names the object.
        version_id = part.upload.complete()
        self._part = None
        # Refuse to commit an object whose uploaded parts do not add up: never a short object.
        size = self._bucket.size(part.key, version_id)
        if size != part.bytes:
            raise RuntimeError(
                f"s3://{self._target.bucket}/{part.key} has {size} bytes after upload, "
                f"expected {part.bytes}: the object is left uncommitted; rerun the export"
            )
        digest = part.sha256.hexdigest()
        part.schema.update(part.model.pairs())
        self._add_ts(part.model.newest_ts)
        schema_version = next_schema(self._previous_schema, part.schema).version
        tags = {
            Meta.DOCUMENT_COUNT: str(part.documents),
            Meta.SHA256: digest,
            Meta.SCHEMA_VERSION: str(schema_version),
        }
        self._bucket.set_tags(part.key, tags, version_id)
        self._schema.merge(part.schema)
        record = ManifestPart(
            key=part.key,
            version_id=version_id,
            bytes=part.bytes,
            uncompressed_bytes=part.uncompressed,
            documents=part.documents,
            sha256=digest,
            feed_range=self._feed_range,
            part_number=self._next_number - 1,
            schema_version=schema_version,
        )
        self._records.append(record)
        self._log.info(
            "object_written",
            key=record.key,
            version_id=record.version_id,
            bytes=record.bytes,
            docs=record.documents,
            sha256=record.sha256,
            uncompressed_bytes=record.uncompressed_bytes,
            feed_range_index=self._index,
        )
