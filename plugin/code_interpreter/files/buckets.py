"""Blob buckets: the bytes of files that expire live in one GridFS bucket per UTC hour of expiry.

Why: deleting bytes document by document is what a cleanup spent its time on (SecantusDB, see the
cleanup benchmark: a files document and its chunks cost about as much as the metadata), while
dropping a bucket's two collections removes every file in them in one command each. So a file
whose ``expires_at`` falls in the hour starting 14:00 UTC on 2026-11-28 stores its bytes in the
bucket ``file_blobs_2026112814``, and once that hour has passed (plus :data:`DROP_MARGIN`), every
file in it has expired and the bucket can go whole. Files that never expire, and all data written
before buckets existed, stay in the legacy bucket ``file_blobs`` and are deleted one by one.

The metadata's ``file_path`` (``gridfs://<bucket>/<file_id>``) names the bucket; every read and
delete goes where it points (:func:`bucket_of`). Only names of this module's two forms are accepted
from the database, so a stray ``file_path`` can never point a delete at another collection.

The margin: a bucket is dropped only when its hour ended :data:`DROP_MARGIN` ago (by the dropping
host's clock), which covers clock skew between hosts (each host computes expiry from its own clock)
and uploads still streaming into the bucket (an upload names its bucket when it starts).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .blobs import BlobStore

__all__ = [
    "DROP_MARGIN",
    "HOUR",
    "LEGACY_BUCKET",
    "Buckets",
    "blob_path",
    "bucket_for",
    "bucket_of",
    "droppable",
    "hour_of",
]

Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]

LEGACY_BUCKET = "file_blobs"
HOUR = timedelta(hours=1)
DROP_MARGIN = timedelta(minutes=10)
_NAME_RE = re.compile(r"file_blobs(?:_(\d{10}))?")
_PATH_RE = re.compile(r"gridfs://([^/]+)/(.+)")
_HOUR_FORMAT = "%Y%m%d%H"


def bucket_for(expires_at: datetime | None) -> str:
    """The bucket for a file expiring at ``expires_at`` (aware): its UTC hour, or the legacy one for never."""
    if expires_at is None:
        return LEGACY_BUCKET
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware (UTC)")
    return f"{LEGACY_BUCKET}_{expires_at.astimezone(UTC).strftime(_HOUR_FORMAT)}"


def blob_path(bucket: str, file_id: str) -> str:
    """The metadata's ``file_path`` for a blob: ``gridfs://<bucket>/<file_id>``."""
    return f"gridfs://{bucket}/{file_id}"


def bucket_of(doc: Mapping[str, Any]) -> str:
    """The bucket holding a file's bytes, from its metadata (legacy when ``file_path`` names none of ours)."""
    found = _PATH_RE.fullmatch(str(doc.get("file_path") or ""))
    if found and _NAME_RE.fullmatch(found.group(1)):
        return found.group(1)
    return LEGACY_BUCKET


def hour_of(bucket: str) -> datetime | None:
    """The UTC hour whose expiries a bucket holds; None for the legacy bucket (and any other name)."""
    found = _NAME_RE.fullmatch(bucket)
    if not found or found.group(1) is None:
        return None
    try:
        return datetime.strptime(found.group(1), _HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # a well-formed name of no real hour: never ours to drop
        return None


def droppable(bucket: str, now: datetime, margin: timedelta = DROP_MARGIN) -> bool:
    """True when every file of ``bucket`` expired at least ``margin`` before ``now``."""
    hour = hour_of(bucket)
    return hour is not None and hour + HOUR + margin <= now


class Buckets:
    """The file store's GridFS buckets: indexes made on first write, grouped deletes, listing, drops."""

    def __init__(self, db: AsyncDatabase[Any], retry: Retry) -> None:
        self.db = db
        self._retry = retry
        self._ready: set[str] = set()

    def store(self, bucket: str) -> BlobStore:
        """The bucket's BlobStore (for reads and deletes; see :meth:`for_writing`)."""
        return BlobStore(self.db, bucket, self._retry)

    async def for_writing(self, bucket: str) -> BlobStore:
        """The bucket's BlobStore, its indexes created once per process (idempotent retries need them)."""
        store = self.store(bucket)
        if bucket not in self._ready:
            await store.ensure_indexes()
            self._ready.add(bucket)
        return store

    async def delete(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Delete the bytes of these files (their metadata documents name the buckets), bucket by bucket."""
        by_bucket: dict[str, list[str]] = defaultdict(list)
        for doc in docs:
            by_bucket[bucket_of(doc)].append(str(doc["file_id"]))
        for bucket, ids in sorted(by_bucket.items()):
            await self.store(bucket).delete(ids)

    async def names(self) -> list[str]:
        """Every bucket in the database (either of its two collections present), sorted."""
        colls: list[str] = await self._retry(self.db.list_collection_names, "list file buckets")
        found = set()
        for name in colls:
            base, _, kind = name.rpartition(".")
            if kind in ("files", "chunks") and _NAME_RE.fullmatch(base):
                found.add(base)
        return sorted(found)

    async def drop(self, bucket: str) -> None:
        """Drop a bucket: its files collection first (its blobs stop existing, as a GridFS delete does)."""
        if hour_of(bucket) is None:
            raise ValueError(f"refusing to drop {bucket!r}: only hourly buckets are dropped")
        self._ready.discard(bucket)
        for kind in ("files", "chunks"):
            await self._retry(partial(self.db.drop_collection, f"{bucket}.{kind}"), "drop expired file bytes")
