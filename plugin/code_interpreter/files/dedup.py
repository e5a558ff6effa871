"""Deduplicated uploads: the same bytes under the same name, uploaded again by the same user, are one file.

Running a script again with the same data file uploaded it again: the same content under a new id,
each copy counting against the user's quota. Now such an upload returns the file already stored
(same ``file_id``) with its expiry refreshed, and the quota counts it once.

How. Each file's metadata carries ``content_key``, a digest of (user, file name, sha256 of the
bytes), under a unique index (partial: documents written before it have no key). An upload first
looks for an unexpired file with its key; two processes uploading the same file at once both miss,
both write their bytes, and the unique index lets one metadata document in: the other discards its
bytes and adopts the winner. An *expired* file still holding the key (its cleanup has not run yet)
gives the key up first.

Refreshing the expiry moves the bytes when their bucket changes: a file's bytes live in the GridFS
bucket of the hour it expires (:mod:`.buckets`), and that bucket is dropped whole once its hour has
passed. So the bytes are written again into the new hour's bucket under the same id (idempotent),
the metadata is switched over conditionally (``file_path`` as it was read), and only then are the old
bytes deleted; a crash in between leaves only bytes no metadata names, which ``reconcile`` removes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from ..errors import FileStoreError
from .blobs import BlobStore
from .buckets import Buckets, blob_path, bucket_for, bucket_of

__all__ = ["INDEX", "Dedup", "Source", "blob_source", "bytes_source", "content_key", "sha256_of"]

Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]
Source = Callable[[], Awaitable[bytes | AsyncIterable[bytes]]]
"""Gives the upload's bytes (again) when they must be written into another bucket."""

INDEX = "content_key_unique"
_HASH_OFF_LOOP = 1 << 20  # hashing a MB takes about a millisecond: larger inputs go to a thread


def content_key(user_id: str, filename: str, sha256: str) -> str:
    """The digest naming one user's file by its name and content."""
    return hashlib.sha256(json.dumps([user_id, filename, sha256]).encode()).hexdigest()


async def sha256_of(data: bytes | bytearray | memoryview) -> str:
    """The hex sha256 of ``data``, off the event loop when it is large."""
    if len(data) > _HASH_OFF_LOOP:
        return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return hashlib.sha256(data).hexdigest()


async def bytes_source(data: bytes) -> bytes:
    """An upload given as bytes, as a :data:`Source`."""
    return data


async def blob_source(blobs: BlobStore, blob_id: str) -> AsyncIterable[bytes]:
    """The bytes of a blob this upload just wrote (a stream cannot be read twice), as a :data:`Source`."""
    chunks = await blobs.chunks_of(blob_id)
    if chunks is None:
        raise FileStoreError(f"the bytes just stored as {blob_id} are gone; upload the file again")
    return chunks


class Dedup:
    """Finds a user's file with the same name and content, and refreshes its expiry (moving its bytes)."""

    def __init__(
        self,
        meta: AsyncCollection[Any],
        meta_ack: AsyncCollection[Any],
        buckets: Buckets,
        retry: Retry,
        visible: Callable[[dict[str, Any], datetime], dict[str, Any]],
    ) -> None:
        """Over the metadata collection (``meta_ack``: journaled writes) and the buckets of bytes."""
        self.meta = meta
        self.meta_ack = meta_ack
        self.buckets = buckets
        self._retry = retry
        self._visible = visible

    async def ensure_index(self) -> None:
        """The unique index on ``content_key`` (partial: older metadata has no key)."""
        await self._retry(
            lambda: self.meta.create_index(
                "content_key",
                name=INDEX,
                unique=True,
                partialFilterExpression={"content_key": {"$exists": True}},
            ),
            "create index",
        )

    async def find(self, key: str, now: datetime) -> dict[str, Any] | None:
        """The unexpired file holding ``key``, or None."""
        query = self._visible({"content_key": key}, now)
        doc: dict[str, Any] | None = await self._retry(lambda: self.meta.find_one(query), "find a duplicate")
        return doc

    async def release_expired(self, key: str, now: datetime) -> bool:
        """Take ``key`` off an expired file still holding it (its cleanup has not run); True if one did."""
        query = {"content_key": key, "expires_at": {"$lte": now}}
        res = await self._retry(
            partial(self.meta_ack.update_one, query, {"$unset": {"content_key": ""}}), "release a file name"
        )
        return bool(res.modified_count)

    async def refresh(
        self,
        doc: dict[str, Any],
        source: Source,
        expires_at: datetime | None,
        limit: int,
    ) -> dict[str, Any] | None:
        """Give ``doc`` the new expiry, its bytes (from ``source``: the same content) in that expiry's bucket.

        Returns the updated metadata, or None when the file went away meanwhile (deleted, or moved by
        another upload to another bucket): the caller then stores the upload as a new file.
        """
        file_id, old_path = str(doc["file_id"]), doc.get("file_path")
        old_bucket, new_bucket = bucket_of(doc), bucket_for(expires_at)
        changes: dict[str, Any] = {"expires_at": expires_at}
        if new_bucket != old_bucket:
            store = await self.buckets.for_writing(new_bucket)
            meta = {"user_id": doc.get("user_id")}
            await store.write(file_id, await source(), limit, str(doc.get("filename") or "file"), meta)
            changes["file_path"] = blob_path(new_bucket, file_id)
        query = {"file_id": file_id, "file_path": old_path}
        res = await self._retry(partial(self.meta_ack.update_one, query, {"$set": changes}), "refresh a file")
        if res.matched_count:
            if new_bucket != old_bucket:
                await self.buckets.store(old_bucket).delete([file_id])
            return {**doc, **changes}
        # Changed meanwhile: another upload of the same file moved it already (keep its bytes), or
        # the file was deleted (then nothing names the bytes written here).
        now = await self._retry(lambda: self.meta.find_one({"file_id": file_id}), "find a file")
        if now is not None and bucket_of(now) == new_bucket:
            return dict(now)
        if new_bucket != old_bucket:
            await self.buckets.store(new_bucket).discard([file_id])
        return None
