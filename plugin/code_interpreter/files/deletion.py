"""Deleting many files at once: one pass over the metadata in windows of file ids, then whole buckets.

Why this shape (measured on the embedded SecantusDB, see the cleanup benchmark): the server
evaluates a whole query per call, so re-querying "the next batch" with a limit rescanned every
remaining expired file each time (quadratic: 1,128 s for 100,000 files); and it matches ``$in``
candidate by candidate, so a long ``$in`` list costs per document what it saves per command.
Here one cursor streams the matching metadata in ``file_id`` order; each window of it is
deleted metadata first — one journaled range delete on the unique ``file_id`` index, exactly
the documents streamed, one fsync — then the bytes (a bulk of point deletes, short ``$in``
lists for the chunks, bucket by bucket), then the local cache copies.

A cleanup spares the bytes of files in buckets whose hour has entirely expired (see
:mod:`.buckets`): once the pass has deleted their metadata, :func:`drop_expired_buckets` drops
each such bucket that no metadata refers to any more — two commands instead of two deletes per
file. A window, and a bucket's drop, is never abandoned half-way by a cancellation; a crash
between the steps leaves only orphans (bytes without metadata, never the reverse) that the next
cleanup's drops or ``reconcile`` remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from . import cache
from .buckets import HOUR, Buckets, droppable, hour_of

__all__ = ["delete_where", "drop_expired_buckets", "finish_if_cancelled"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]


async def delete_where(
    query: dict[str, Any],
    meta: AsyncCollection[Any],
    meta_ack: AsyncCollection[Any],
    buckets: Buckets,
    cache_dir: Path,
    retry: Retry,
    batch: int,
    spare: Callable[[str], bool] | None = None,
) -> int:
    """Delete every file whose metadata matches ``query``; returns how many metadata documents went.

    Args:
        query: a filter on the metadata; ``file_id`` may only be constrained by ``$in``.
        meta: the metadata collection (reads); ``meta_ack``: the same with a journaled write concern.
        buckets, cache_dir: where the bytes and the local copies live.
        retry: the file manager's retry wrapper (transient faults, StorageUnavailable).
        batch: files per window.
        spare: buckets whose bytes are left in place (the cleanup drops them whole afterwards).
    """
    if "file_id" in query and not isinstance(query["file_id"], dict):
        raise ValueError("delete_where windows on file_id; delete a single file with delete_user_file")
    fields = {"_id": 0, "file_id": 1, "file_path": 1}
    stream = _Stream(lambda: meta.find(query, fields).sort("file_id", 1).batch_size(batch))
    total = 0
    try:
        while True:
            docs = await retry(lambda: stream.next(batch), "find files")
            if not docs:
                return total
            ids = [d["file_id"] for d in docs]
            window = _window(query, ids)
            step = _delete_window(window, docs, meta_ack, buckets, cache_dir, retry, spare)
            total += await finish_if_cancelled(step)
    finally:
        await stream.close()


def _window(query: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The filter matching exactly the streamed ``ids`` among the documents ``query`` matches."""
    if "file_id" in query:  # quota eviction, a few victims: {"file_id": {"$in": victims}, "user_id": …}
        return {**query, "file_id": {"$in": ids}}
    # The range first: SecantusDB plans a multi-field delete by its first indexable clause.
    return {"file_id": {"$gte": ids[0], "$lte": ids[-1]}, **query}


async def _delete_window(
    window: dict[str, Any],
    docs: list[dict[str, Any]],
    meta_ack: AsyncCollection[Any],
    buckets: Buckets,
    cache_dir: Path,
    retry: Retry,
    spare: Callable[[str], bool] | None,
) -> int:
    res = await retry(partial(meta_ack.delete_many, window), "delete files")
    await buckets.delete(docs, spare)
    await cache.remove(cache_dir, [d["file_id"] for d in docs])
    return int(res.deleted_count)


async def drop_expired_buckets(
    buckets: Buckets, meta: AsyncCollection[Any], now: datetime, retry: Retry
) -> list[str]:
    """Drop every bucket whose hour ended DROP_MARGIN before ``now`` and that no metadata refers to.

    Run after the expired metadata is deleted (journaled), so no file that can still be seen loses
    its bytes. Metadata found in a bucket's hour (an upload that finished after the cleanup's pass)
    keeps the bucket for a later cleanup. Returns the dropped buckets' names.
    """
    dropped = []
    for bucket in await buckets.names():
        hour = hour_of(bucket)
        if hour is None or not droppable(bucket, now):
            continue
        in_hour = {"expires_at": {"$gte": hour, "$lt": hour + HOUR}}
        referred = await retry(partial(meta.find_one, in_hour, {"_id": 0, "file_id": 1}), "check a bucket")
        if referred is not None:
            log.info("cleanup: %s still holds %s; dropped later", bucket, referred["file_id"])
            continue
        await finish_if_cancelled(buckets.drop(bucket))
        dropped.append(bucket)
    return dropped


class _Stream:
    """A cursor read in batches; after a failure the next read opens a fresh one (for the retry)."""

    def __init__(self, open_cursor: Callable[[], Any]) -> None:
        self._open = open_cursor
        self._cursor: Any = None

    async def next(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` more documents ([] at the end); a failure closes the cursor and re-raises."""
        if self._cursor is None:
            self._cursor = self._open()
        try:
            docs: list[dict[str, Any]] = await self._cursor.to_list(n)
        except BaseException:
            await self.close()
            raise
        return docs

    async def close(self) -> None:
        """Close the cursor (idempotent, never raises)."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(Exception):
                await cursor.close()


async def finish_if_cancelled(aw: Awaitable[T]) -> T:
    """Await ``aw``; if the caller is cancelled meanwhile, let ``aw`` finish first, then re-raise.

    A window deletes metadata, then bytes, then cache copies: stopping between those steps would
    leave orphans for the next reconcile, so stop_cleanup_task() waits for the window instead.
    """
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
