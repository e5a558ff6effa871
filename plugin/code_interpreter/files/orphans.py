"""Reconcile's search for what a crash left, in every bucket: blobs without metadata and the reverse."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from .buckets import Buckets, bucket_of

__all__ = ["find_orphans"]

Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]


async def find_orphans(
    meta: AsyncCollection[Any], buckets: Buckets, retry: Retry, grace_s: float
) -> tuple[list[tuple[str, str]], list[str]]:
    """([(bucket, blob id)] without metadata, [file_id] without blob) over ``meta`` and every bucket.

    A blob is an orphan unless metadata names it *in its bucket*. Metadata is read *before* the
    buckets are listed and read: metadata is written after its blob, so any metadata seen has its
    bucket and blob in the later listing unless they are truly gone (a bucket created after the
    metadata read holds only blobs whose metadata was not seen, young ones, which the grace spares).
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    metas = await retry(
        lambda: meta.find({}, {"file_id": 1, "file_path": 1, "_id": 0}).to_list(None), "scan metadata"
    )
    wanted: dict[str, set[str]] = defaultdict(set)  # bucket -> file ids its metadata points at
    for d in metas:
        wanted[bucket_of(d)].add(d["file_id"])
    orphan_blobs: list[tuple[str, str]] = []
    present: dict[str, set[str]] = {}
    for bucket in await buckets.names():
        old, incomplete, present[bucket] = await _scan(buckets, bucket, retry, cutoff)
        orphan_blobs += [(bucket, i) for i in old if i not in wanted[bucket]]
        orphan_blobs += [(bucket, i) for i in incomplete]
    orphan_meta = sorted(i for bucket, ids in wanted.items() for i in ids - present.get(bucket, set()))
    return orphan_blobs, orphan_meta


async def _scan(
    buckets: Buckets, bucket: str, retry: Retry, cutoff: datetime
) -> tuple[list[str], list[str], set[str]]:
    """One bucket's (complete blobs older than cutoff, old chunks without files document, all complete)."""
    store = buckets.store(bucket)
    files = await retry(
        lambda: store.files.find({}, {"_id": 1, "uploadDate": 1}).to_list(None), "scan file bytes"
    )
    complete = {d["_id"] for d in files}
    old = [d["_id"] for d in files if _older(d.get("uploadDate"), cutoff)]
    # Chunks whose files document never came (a crash mid-upload, or mid-drop of the bucket); their
    # ObjectId dates them.
    pipeline: list[dict[str, Any]] = [{"$group": {"_id": "$files_id", "first": {"$min": "$_id"}}}]

    async def groups() -> list[dict[str, Any]]:
        return await (await store.chunks.aggregate(pipeline)).to_list(None)

    incomplete = [
        g["_id"]
        for g in await retry(groups, "scan file chunks")
        if g["_id"] not in complete and _older(_oid_time(g["first"]), cutoff)
    ]
    return old, incomplete, complete


def _oid_time(oid: Any) -> datetime | None:
    gt = getattr(oid, "generation_time", None)
    return gt if isinstance(gt, datetime) else None


def _older(when: datetime | None, cutoff: datetime) -> bool:
    if when is None:
        return True
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when <= cutoff
