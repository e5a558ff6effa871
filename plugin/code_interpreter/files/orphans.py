"""Reconcile's search for what a crash left: GridFS blobs without metadata, metadata without blobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from .blobs import BlobStore

__all__ = ["find_orphans"]

Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]


async def find_orphans(
    meta: AsyncCollection[Any], blobs: BlobStore, retry: Retry, grace_s: float
) -> tuple[list[str], list[str]]:
    """(blob ids without metadata, file_ids without blob) of the ``meta`` collection and the ``blobs`` bucket.

    Metadata is read *before* blobs: metadata is written after its blob, so any metadata seen
    has its blob already in the later snapshot unless it is truly gone.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    metas = await retry(lambda: meta.find({}, {"file_id": 1, "_id": 0}).to_list(None), "scan metadata")
    meta_ids = {d["file_id"] for d in metas}
    files = await retry(
        lambda: blobs.files.find({}, {"_id": 1, "uploadDate": 1}).to_list(None), "scan file bytes"
    )
    blob_ids = {d["_id"] for d in files}
    orphan_blobs = [
        d["_id"] for d in files if d["_id"] not in meta_ids and _older(d.get("uploadDate"), cutoff)
    ]
    # Chunks whose files document never came (a crash mid-upload); their ObjectId dates them.
    pipeline: list[dict[str, Any]] = [{"$group": {"_id": "$files_id", "first": {"$min": "$_id"}}}]

    async def groups() -> list[dict[str, Any]]:
        return await (await blobs.chunks.aggregate(pipeline)).to_list(None)

    for g in await retry(groups, "scan file chunks"):
        if g["_id"] not in blob_ids and _older(_oid_time(g["first"]), cutoff):
            orphan_blobs.append(g["_id"])
    orphan_meta = sorted(m for m in meta_ids if m not in blob_ids)
    return orphan_blobs, orphan_meta


def _oid_time(oid: Any) -> datetime | None:
    gt = getattr(oid, "generation_time", None)
    return gt if isinstance(gt, datetime) else None


def _older(when: datetime | None, cutoff: datetime) -> bool:
    if when is None:
        return True
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when <= cutoff
