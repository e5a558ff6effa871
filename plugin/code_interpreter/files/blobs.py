"""File bytes in GridFS: written chunk batch by chunk batch (each retried), read through AsyncGridFSBucket.

Why not ``AsyncGridFSBucket.open_upload_stream``: a GridIn cannot be resumed after a network
error in the middle of a stream, and a caller's async byte stream cannot be replayed. Writing
GridFS's documented layout ourselves (``<bucket>.chunks`` documents ``{files_id, n, data}``,
then the ``<bucket>.files`` document ``{_id, length, chunkSize, uploadDate, filename,
metadata}``) makes every step idempotent: a retried chunk batch whose first try landed hits
the unique ``(files_id, n)`` index and counts as done. The files document is written last,
exactly as the driver does, so a blob is complete once it exists. Reads use the driver's
``AsyncGridFSBucket``; deletes are plain ``delete_many`` calls, which makes deleting a blob that
another process already deleted a no-op instead of gridfs's ``NoFile`` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from bson import Binary, CodecOptions
from gridfs import AsyncGridFSBucket, NoFile
from pymongo import DeleteOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

__all__ = ["CHUNK_SIZE", "BlobStore", "BlobTooLarge", "BlobWritten"]

T = TypeVar("T")
Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]

CHUNK_SIZE = 255 * 1024  # GridFS's default: a chunk document stays well under 16 MB
CHUNKS_PER_BATCH = 8  # ~2 MB per insert_many: few round trips, bounded memory
CHUNK_DELETE_IDS = 50  # files per chunks delete_many (measured; see BlobStore.delete)
HEAD_BYTES = 512
TAIL_BYTES = 8
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


class BlobTooLarge(Exception):
    """The stream passed the size cap; nothing was kept."""

    def __init__(self, consumed: int) -> None:
        super().__init__(consumed)
        self.consumed = consumed


@dataclass(frozen=True, slots=True)
class BlobWritten:
    """What writing a blob learned about its bytes."""

    size: int
    """Bytes stored."""
    sha256: str
    """Hex digest of the bytes."""
    head: bytes
    """First bytes, for the content sniff."""
    tail: bytes
    """Last bytes (parquet ends with its magic too)."""


class BlobStore:
    """One GridFS bucket: idempotent chunked writes, streamed reads, idempotent deletes."""

    def __init__(
        self, db: AsyncDatabase[Any], bucket: str, retry: Retry, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.files = db.get_collection(f"{bucket}.files", codec_options=CODEC)
        self.chunks = db.get_collection(f"{bucket}.chunks", codec_options=CODEC)
        self.bucket = AsyncGridFSBucket(db, bucket_name=bucket, chunk_size_bytes=chunk_size)
        self.chunk_size = chunk_size
        self._retry = retry

    async def ensure_indexes(self) -> None:
        """The indexes GridFS drivers expect (and rely on for reads and our idempotent writes)."""
        await self._retry(
            lambda: self.files.create_index([("filename", 1), ("uploadDate", 1)]), "create index"
        )
        await self._retry(
            lambda: self.chunks.create_index([("files_id", 1), ("n", 1)], unique=True), "create index"
        )

    async def write(
        self,
        blob_id: str,
        source: bytes | AsyncIterable[bytes],
        max_size: int,
        filename: str,
        metadata: dict[str, Any],
    ) -> BlobWritten:
        """Store ``source`` as blob ``blob_id``; BlobTooLarge once it passes ``max_size`` (nothing kept)."""
        hasher = hashlib.sha256()
        size = 0
        head = bytearray()
        tail = b""
        buf = bytearray()
        pending: list[dict[str, Any]] = []
        n = 0
        try:
            async for part in _parts(source, self.chunk_size * CHUNKS_PER_BATCH):
                if not part:
                    continue
                size += len(part)
                if size > max_size:
                    raise BlobTooLarge(size)  # stop reading at once: the rest is never pulled
                hasher.update(part)
                if len(head) < HEAD_BYTES:
                    head += part[: HEAD_BYTES - len(head)]
                tail = (tail + bytes(part[-TAIL_BYTES:]))[-TAIL_BYTES:]
                buf += part
                while len(buf) >= self.chunk_size:
                    pending.append(
                        {"files_id": blob_id, "n": n, "data": Binary(bytes(buf[: self.chunk_size]))}
                    )
                    del buf[: self.chunk_size]
                    n += 1
                if len(pending) >= CHUNKS_PER_BATCH:
                    await self._insert_chunks(pending)
                    pending = []
            if buf:
                pending.append({"files_id": blob_id, "n": n, "data": Binary(bytes(buf))})
            if pending:
                await self._insert_chunks(pending)
            doc = {
                "_id": blob_id,
                "length": size,
                "chunkSize": self.chunk_size,
                # Real time, not the file manager's clock: reconcile's grace period is about
                # uploads in flight right now.
                "uploadDate": datetime.now(UTC),
                "filename": filename,
                "metadata": metadata,
            }
            await self._retry(lambda: _insert_once(self.files, doc), "write file record")
        except BaseException:
            await self.discard([blob_id])
            raise
        return BlobWritten(size, hasher.hexdigest(), bytes(head), tail)

    async def chunks_of(self, blob_id: str) -> AsyncIterator[bytes] | None:
        """An iterator over the blob's chunks, or None if there is no such blob."""
        try:
            grid_out = await self.bucket.open_download_stream(blob_id)
        except NoFile:
            return None
        return _read_chunks(grid_out)

    async def delete(self, blob_ids: Sequence[str]) -> None:
        """Delete blobs (files document first, as GridFS does); missing ones are already done.

        The files documents go in one bulk of point deletes by ``_id``; the chunks by ``files_id``
        ``$in`` lists of CHUNK_DELETE_IDS (SecantusDB matches ``$in`` candidate by candidate, so
        a long list costs per document what a short one costs per command; see the benchmark).
        """
        ids = list(blob_ids)
        if not ids:
            return
        by_id = [DeleteOne({"_id": i}) for i in ids]
        await self._retry(lambda: self.files.bulk_write(by_id, ordered=False), "delete file bytes")
        for i in range(0, len(ids), CHUNK_DELETE_IDS):
            part = ids[i : i + CHUNK_DELETE_IDS]
            chunk_query = {"files_id": {"$in": part}}
            await self._retry(partial(self.chunks.delete_many, chunk_query), "delete file bytes")

    async def discard(self, blob_ids: Sequence[str]) -> None:
        """Best-effort delete after a failed write; a crash here is what reconcile() cleans."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self.delete(blob_ids))

    async def _insert_chunks(self, docs: list[dict[str, Any]]) -> None:
        async def op() -> None:
            try:
                await self.chunks.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                # 11000: this chunk already landed on an earlier try whose reply was lost.
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])) or exc.details.get(
                    "writeConcernErrors"
                ):
                    raise

        await self._retry(op, "write file bytes")


async def _insert_once(coll: Any, doc: dict[str, Any]) -> None:
    try:
        await coll.insert_one(dict(doc))
    except DuplicateKeyError:
        existing = await coll.find_one({"_id": doc["_id"]})
        if existing is None or existing.get("length") != doc.get("length"):
            raise


async def _parts(source: bytes | AsyncIterable[bytes], step: int) -> AsyncIterator[bytes | memoryview]:
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for i in range(0, len(view), step):
            yield view[i : i + step]
        return
    async for part in source:
        if not isinstance(part, bytes | bytearray | memoryview):
            raise TypeError(f"file_data yielded {type(part).__name__}; an async stream must yield bytes")
        yield part


async def _read_chunks(grid_out: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := await grid_out.readchunk():
            yield chunk
    finally:
        await grid_out.close()
