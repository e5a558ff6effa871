"""FileManager: per-user files in MongoDB (metadata in ``user_files``, bytes in GridFS), with expiry.

Data model. ``user_files`` holds one document per file with the seed's fields (``file_id``,
``user_id``, ``filename``, ``file_path``, ``file_size``, ``file_type``, ``uploaded_at``,
``expires_at``) plus ``sha256``, ``content_type`` and ``content_key`` (same user, name and bytes: the
same file, see :mod:`.dedup`). ``user_id`` is always stored as a *string*
(Discord ids are ints; ``1`` and ``"1"`` are the same user). ``file_path`` is
``gridfs://<bucket>/<file_id>``: the bytes live in that GridFS bucket under ``_id = file_id`` —
``file_blobs_<YYYYMMDDHH>`` for the UTC hour of ``expires_at``, or the legacy ``file_blobs`` for
files that never expire and everything stored before buckets existed (see :mod:`.buckets`);
:meth:`FileManager.materialize` gives a local path. Times are BSON datetimes in UTC; ``expires_at``
is None for files that never expire (``file_expiration_hours = -1``). Returned dicts carry times
as ISO-8601 strings, as the seed's did.

Expiry, and why there is no TTL index. A file is invisible from the instant ``expires_at <=
now``: every read filters on it, so nothing depends on when a cleaner runs. Deletion is done by
:meth:`cleanup_expired_files`, which removes metadata, GridFS files *and chunks*, and local cache
copies together: bytes one file at a time where their bucket still holds files that have not
expired, by dropping the whole bucket where its hour has passed. A TTL index would delete only
the metadata, leaving GridFS chunks (the bulk of the bytes) and cache copies behind for
:meth:`reconcile` to find, and its 60 s sweep races the cleaner; it adds nothing the cleaner does
not do, so only a plain index on ``expires_at`` is created (it also finds a bucket's files).
Consistency: an upload writes the blob first and the metadata last (a file is visible only once
complete), deletes remove metadata first (journaled); a crash between the two leaves an orphan
that :meth:`reconcile` or the next cleanup removes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from ..errors import FileStoreError
from ..settings import Settings
from ..storage.retry import RetryContext, RetryPolicy, context_for
from . import cache
from .blobs import CODEC, BlobTooLarge
from .buckets import LEGACY_BUCKET, Buckets, blob_path, bucket_for, bucket_of
from .dedup import Dedup, blob_source, bytes_source, content_key, sha256_of
from .deletion import delete_where, expire_buckets
from .names import content_type_for, detect_file_type, safe_filename, safe_id_part
from .orphans import find_orphans
from .quota import StoredItem, room_for_upload
from .records import is_visible, journaled, public, to_ms, too_large, uid_of, valid_id
from .session_store import SessionStore

__all__ = ["BUCKET", "COLLECTION", "FileManager"]

log = logging.getLogger(__name__)
T = TypeVar("T")

COLLECTION = "user_files"
BUCKET = LEGACY_BUCKET  # the legacy bucket; files that expire use one bucket per hour (see .buckets)
CLEANUP_BATCH = 1000
DEDUP_ATTEMPTS = 3  # a duplicate changing under an upload (moved, deleted, expired) is looked at again
RECONCILE_GRACE_S = 3600.0  # an upload still streaming has a blob without metadata for this long at most


class FileManager:
    """Upload, list, read, delete and expire per-user files (async, pymongo + GridFS)."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        retry: RetryPolicy | None = None,
        cleanup_batch: int = CLEANUP_BATCH,
    ) -> None:
        """Args: ``clock`` returns aware UTC datetimes (tests inject it; without one, sessions' leases
        run on the database server's clock); ``retry`` overrides the policy registered by
        :class:`~code_interpreter.storage.Storage` for this client."""
        self.db = db
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        ctx = context_for(db)
        self._ctx = RetryContext(retry or ctx.policy, ctx.on_retry, ctx.server)
        self.meta = db.get_collection(COLLECTION, codec_options=CODEC)
        # The metadata insert is the upload's acknowledgement: make it journaled. The journal is
        # sequential, so this also makes the blob's earlier chunk writes durable (one fsync per upload;
        # without it SecantusDB loses the last acknowledged writes on kill -9).
        self._meta_ack = self.meta.with_options(write_concern=journaled(self.meta.write_concern))
        self.buckets = Buckets(db, self._retry)
        """The GridFS buckets of file bytes (one per hour of expiry, and the legacy one)."""
        self.blobs = self.buckets.store(BUCKET)
        """The legacy bucket: files that never expire, and files stored before hourly buckets."""
        self.session_store = SessionStore(
            db, settings, clock=self._now if clock is not None else None, retry=self._retry, files=self
        )
        """Sessions' ownership leases and saved snapshots (same database, quota and expiry rules)."""
        self._dedup = Dedup(self.meta, self._meta_ack, self.buckets, self._retry, self._visible)
        self.cache_dir = settings.home / "cache"
        self.cleanup_batch = max(1, cleanup_batch)
        self._indexed = False
        self._cleanup_task: asyncio.Task[None] | None = None

    # -- setup -----------------------------------------------------------------
    async def ensure_indexes(self) -> None:
        """Create the indexes (idempotent): (user_id, expires_at), unique file_id, expires_at, GridFS's."""
        await self._retry(
            lambda: self.meta.create_index([("user_id", 1), ("expires_at", -1)]), "create index"
        )
        await self._retry(lambda: self.meta.create_index("file_id", unique=True), "create index")
        await self._retry(lambda: self.meta.create_index("expires_at"), "create index")
        await self._dedup.ensure_index()
        await self.buckets.for_writing(BUCKET)
        await self.session_store.ensure_indexes()
        self._indexed = True

    # -- upload ----------------------------------------------------------------
    async def upload_file(
        self,
        user_id: int | str,
        file_data: bytes | AsyncIterable[bytes],
        filename: str,
        file_type: str | None = None,
    ) -> dict[str, Any]:
        """Store a file for a user; the size cap is enforced while reading a stream.

        The same bytes under the same name, uploaded again by the same user while the first copy is
        kept, are that copy (see :mod:`.dedup`): its ``file_id`` comes back with the expiry refreshed
        and ``deduplicated`` True, and the quota counts it once.

        Returns the seed's dicts: ``{"success": True, "file_id", "filename", "file_size", "file_type",
        "content_type", "sha256", "uploaded_at", "expires_at", "deduplicated"}``, or
        ``{"success": False, "error"}`` for a file over the size cap or the user's quota.

        Raises:
            StorageUnavailable: MongoDB stayed unreachable; no file was kept.
            TypeError: ``file_data`` is neither bytes nor an async iterable of bytes.
        """
        uid = uid_of(user_id)
        name = safe_filename(filename)
        limit = self.settings.max_file_size
        known: int | None = None
        if isinstance(file_data, bytes | bytearray | memoryview):
            known = len(file_data)
            if known > limit:
                return too_large(limit)
        elif not hasattr(file_data, "__aiter__"):
            raise TypeError(
                f"file_data must be bytes or an async iterable of bytes, not {type(file_data).__name__}"
            )
        if not self._indexed:
            await self.ensure_indexes()
        if isinstance(file_data, bytes | bytearray | memoryview):
            data = file_data
            same = await self._same_file(
                content_key(uid, name, await sha256_of(data)), partial(bytes_source, data)
            )
            if same is not None:
                return same
        refusal = await self._make_room(uid, known or 0)
        if refusal:
            return {"success": False, "error": refusal}
        return await self._store_new(uid, name, file_data, file_type, known)

    async def _store_new(
        self,
        uid: str,
        name: str,
        file_data: bytes | AsyncIterable[bytes],
        file_type: str | None,
        known: int | None,
    ) -> dict[str, Any]:
        now = self._now()
        file_id = f"user_{safe_id_part(uid)}_{int(now.timestamp())}_{secrets.token_hex(5)}"
        expires_at = self._expiry(now)
        bucket = bucket_for(expires_at)
        blobs = await self.buckets.for_writing(bucket)
        try:
            blob = await blobs.write(file_id, file_data, self.settings.max_file_size, name, {"user_id": uid})
        except BlobTooLarge:
            return too_large(self.settings.max_file_size)
        key = content_key(uid, name, blob.sha256)
        try:
            if known is None:  # a stream: its content, and so its duplicate, and its size are known only now
                same = await self._same_file(key, partial(blob_source, blobs, file_id))
                refusal = None if same is not None else await self._make_room(uid, blob.size)
                if same is not None or refusal:
                    await blobs.discard([file_id])
                    return same or {"success": False, "error": refusal}
            ftype = detect_file_type(name, blob.head, file_type, blob.tail)
            doc = {
                "file_id": file_id,
                "user_id": uid,
                "filename": name,
                "file_path": blob_path(bucket, file_id),
                "file_size": blob.size,
                "file_type": ftype,
                "content_type": content_type_for(ftype),
                "sha256": blob.sha256,
                "uploaded_at": now,
                "expires_at": expires_at,
                "content_key": key,
            }
            for _ in range(DEDUP_ATTEMPTS):
                if await self._retry(lambda: self._insert_meta(doc), f"save {name}"):
                    return {"success": True, **public(doc), "deduplicated": False}
                # The same file was stored meanwhile (another process): that one it is.
                same = await self._same_file(key, partial(blob_source, blobs, file_id))
                if same is not None:
                    await blobs.discard([file_id])
                    return same
                await self._dedup.release_expired(key, self._now())  # an expired copy held the key
        except BaseException:
            await blobs.discard([file_id])  # no blob without metadata survives a failed upload
            raise
        await blobs.discard([file_id])
        raise FileStoreError(
            f"{name} was stored and deleted by others while this upload ran; upload it again"
        )

    async def _same_file(
        self, key: str, source: Callable[[], Awaitable[bytes | AsyncIterable[bytes]]]
    ) -> dict[str, Any] | None:
        """The user's unexpired file with this name and content, its expiry refreshed; None if none."""
        for _ in range(DEDUP_ATTEMPTS):
            doc = await self._dedup.find(key, self._now())
            if doc is None:
                return None
            fresh = await self._dedup.refresh(
                doc, source, self._expiry(self._now()), self.settings.max_file_size
            )
            if fresh is not None:
                return {"success": True, **public(fresh), "deduplicated": True}
        return None

    def _expiry(self, now: datetime) -> datetime | None:
        ttl = self.settings.file_ttl_seconds
        return to_ms(now + timedelta(seconds=ttl)) if ttl is not None else None

    # -- queries ---------------------------------------------------------------
    async def list_user_files(self, user_id: int | str) -> list[dict[str, Any]]:
        """The user's unexpired files, newest first."""
        query = self._visible({"user_id": uid_of(user_id)})
        docs = await self._retry(
            lambda: self.meta.find(query).sort([("uploaded_at", -1), ("_id", -1)]).to_list(None), "list files"
        )
        return [public(d) for d in docs]

    async def get_file(self, file_id: str, user_id: int | str) -> dict[str, Any] | None:
        """The file's metadata; None if unknown, expired or another user's (indistinguishable on purpose)."""
        doc = await self._find_visible(file_id, user_id)
        return public(doc) if doc else None

    async def read_file(self, file_id: str, user_id: int | str) -> bytes | None:
        """The file's bytes (sha256-checked), or None on the same terms as get_file."""
        doc = await self._find_visible(file_id, user_id)
        if doc is None:
            return None

        async def op() -> bytes | None:
            chunks = await self.buckets.store(bucket_of(doc)).chunks_of(doc["file_id"])
            if chunks is None:
                return None  # deleted between the lookup and the read
            return await cache.collect_verified(chunks, doc)

        result: bytes | None = await self._retry(op, f"read {doc['filename']}")
        return result

    async def materialize(self, file_id: str, user_id: int | str) -> Path | None:
        """A local copy under ``home/cache`` (sha256-verified) for the sandbox; None as for get_file."""
        doc = await self._find_visible(file_id, user_id)
        if doc is None:
            return None
        path = cache.path_for(self.cache_dir, doc)
        if await cache.is_valid(path, doc):
            return path

        async def op() -> Path | None:
            chunks = await self.buckets.store(bucket_of(doc)).chunks_of(doc["file_id"])
            if chunks is None:
                return None
            await cache.write_verified(chunks, path, doc)
            return path

        result: Path | None = await self._retry(op, f"copy {doc['filename']} to the local cache")
        return result

    async def storage_totals(self) -> dict[str, int]:
        """Files and saved sessions stored for all users, and their bytes (expired ones count until a
        cleanup deletes them).

        Returns ``{"files": n, "bytes": b, "saved_sessions": s, "saved_session_bytes": sb}``, each
        pair from one aggregation (the seed's status read every document).
        """
        pipeline = [{"$group": {"_id": None, "files": {"$sum": 1}, "bytes": {"$sum": "$file_size"}}}]

        async def op() -> list[dict[str, Any]]:
            cursor = await self.meta.aggregate(pipeline)
            return [d async for d in cursor]

        rows: list[dict[str, Any]] = await self._retry(op, "count stored files")
        row = rows[0] if rows else {"files": 0, "bytes": 0}
        saved = await self.session_store.totals()
        return {"files": int(row["files"]), "bytes": int(row["bytes"]), "saved_sessions": saved["sessions"],
                "saved_session_bytes": saved["bytes"]}  # fmt: skip

    # -- deletion --------------------------------------------------------------
    async def delete_user_file(self, file_id: str, user_id: int | str) -> bool:
        """Delete the owner's file (metadata, GridFS bytes, cache copy); False if not theirs or not found."""
        if not valid_id(file_id):
            return False
        uid = uid_of(user_id)
        doc = await self._retry(lambda: self.meta.find_one({"file_id": file_id, "user_id": uid}), "find file")
        if doc is None:
            return False
        await self._retry(
            lambda: self._meta_ack.delete_one({"file_id": file_id, "user_id": uid}), "delete file"
        )
        await self.buckets.delete([doc])
        await cache.remove(self.cache_dir, [file_id])
        # An expired file is gone for its owner too: deleting it is tidy, but it was not "found".
        return is_visible(doc, self._now())

    async def delete_all_user_files(self, user_id: int | str) -> int:
        """Delete every file of a user (expired ones too); returns how many."""
        uid = uid_of(user_id)
        return await self._delete_where({"user_id": uid})

    async def cleanup_expired_files(self) -> int:
        """Delete expired files in batches (metadata, GridFS bytes, cache copies); returns how many.

        First each bucket whose hour of expiry ended more than the margin ago: its files' metadata
        by one journaled delete, then the bucket dropped whole. Then the other expired files in
        windows, metadata (journaled) before bytes, the bytes file by file. Idempotent and safe to
        run from several processes at once: each batch is deleted with ``delete_many`` (a document
        another cleaner took is simply not counted), and deleting or dropping what is already gone
        is a no-op. Local cache copies of files deleted elsewhere are
        swept too, and expired saved sessions are deleted (they are not counted).
        """
        now = self._now()
        count = await expire_buckets(self.buckets, self.meta, self._meta_ack, now, self._retry)
        count += await self._delete_where({"expires_at": {"$lte": now}})
        await self._sweep_cache(now)  # also the copies of files that went with their bucket
        await self.session_store.cleanup_expired()
        return count

    def start_cleanup_task(self, interval_s: float = 3600) -> asyncio.Task[None]:
        """Every ``interval_s`` s run cleanup_expired_files and reconcile; stop_cleanup_task() ends it."""
        if self._cleanup_task is not None and not self._cleanup_task.done():
            return self._cleanup_task
        self._cleanup_task = asyncio.get_running_loop().create_task(
            self._cleanup_loop(interval_s), name="code_interpreter.files.cleanup"
        )
        return self._cleanup_task

    async def stop_cleanup_task(self) -> None:
        """Cancel the periodic cleanup and wait for it to end (a batch being deleted is finished first)."""
        task, self._cleanup_task = self._cleanup_task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves: propagate

    async def reconcile(self, grace_s: float = RECONCILE_GRACE_S) -> dict[str, int]:
        """Remove what a crash left: GridFS blobs without metadata and metadata without blobs.

        Blobs younger than ``grace_s`` (real time) are left alone: an upload in progress writes
        its blob before its metadata. Returns ``{"orphan_blobs": n, "orphan_metadata": m}``.
        """
        blobs, metas = await find_orphans(self.meta, self.buckets, self._retry, grace_s)
        for bucket, ids in _by_bucket(blobs).items():
            for i in range(0, len(ids), self.cleanup_batch):
                await self.buckets.store(bucket).delete(ids[i : i + self.cleanup_batch])
        for i in range(0, len(metas), self.cleanup_batch):
            batch = metas[i : i + self.cleanup_batch]
            await self._retry(partial(self.meta.delete_many, {"file_id": {"$in": batch}}), "delete metadata")
            await cache.remove(self.cache_dir, batch)
        return {"orphan_blobs": len(blobs), "orphan_metadata": len(metas)}

    # -- internals ---------------------------------------------------------------
    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        ctx = self._ctx
        try:
            return await ctx.run(op, what)
        except PyMongoError as exc:  # not transient: the server refused the operation
            raise FileStoreError(f"MongoDB at {ctx.server or 'MongoDB'} refused to {what}: {exc}") from exc

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes (UTC)")
        return to_ms(now.astimezone(UTC))

    def _visible(self, query: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        now = now or self._now()
        return {**query, "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}

    async def _find_visible(self, file_id: str, user_id: int | str) -> dict[str, Any] | None:
        if not valid_id(file_id):
            return None
        query = self._visible({"file_id": file_id, "user_id": uid_of(user_id)})
        doc: dict[str, Any] | None = await self._retry(lambda: self.meta.find_one(query), "find file")
        return doc

    async def _insert_meta(self, doc: dict[str, Any]) -> bool:
        """Insert the metadata; False when another file holds its ``content_key`` (the same file)."""
        try:
            await self._meta_ack.insert_one(dict(doc))
        except DuplicateKeyError:
            # A retry whose first try landed (its reply was lost) finds its own document.
            existing = await self.meta.find_one({"file_id": doc["file_id"]})
            if existing is None and "content_key" in doc:
                return False
            if existing is None or existing.get("sha256") != doc["sha256"]:
                raise
        return True

    async def _make_room(self, uid: str, incoming: int) -> str | None:
        """None if an upload fits the quota (evicting if so configured), else why not (:mod:`.quota`)."""
        return await room_for_upload(self.settings, uid, incoming, files=self, sessions=self.session_store)

    async def quota_items(self, user_id: str) -> list[StoredItem]:
        """The user's unexpired files as the quota counts them (for the session store, too)."""
        query = self._visible({"user_id": user_id})
        docs = await self._retry(
            lambda: self.meta.find(query, {"file_id": 1, "file_size": 1, "uploaded_at": 1}).to_list(None),
            "check quota",
        )
        return [StoredItem("file", d["file_id"], int(d.get("file_size", 0)), d["uploaded_at"]) for d in docs]

    async def evict_items(self, user_id: str, keys: list[str]) -> None:
        """Delete these files of the user to make room (quota eviction)."""
        if keys:
            await self._delete_where({"file_id": {"$in": keys}, "user_id": user_id})

    async def _delete_where(self, query: dict[str, Any]) -> int:
        return await delete_where(
            query,
            self.meta,
            self._meta_ack,
            self.buckets,
            self.cache_dir,
            self._retry,
            self.cleanup_batch,
        )

    async def _sweep_cache(self, now: datetime) -> None:
        names = await cache.listed_ids(self.cache_dir)
        for i in range(0, len(names), self.cleanup_batch):
            batch = names[i : i + self.cleanup_batch]
            q = self._visible({"file_id": {"$in": batch}}, now)
            alive = await self._retry(partial(self.meta.distinct, "file_id", q), "sweep cache")
            await cache.remove(self.cache_dir, sorted(set(batch) - set(alive)))

    async def _cleanup_loop(self, interval_s: float) -> None:
        # Sleep first: a process that starts does not race the cleaners already running elsewhere.
        while True:
            await asyncio.sleep(interval_s)
            try:
                n = await self.cleanup_expired_files()
                if n:
                    log.info("cleanup: deleted %d expired file(s)", n)
                # A crash mid-upload or mid-cleanup can leave blobs without metadata (and the reverse).
                orphans = await self.reconcile()
                if any(orphans.values()):
                    log.info("cleanup: removed orphans %s", orphans)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the loop alive: the next round may find the server back
                log.exception("cleanup of expired files failed; retrying in %.0f s", interval_s)


def _by_bucket(blobs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for bucket, blob_id in blobs:
        out.setdefault(bucket, []).append(blob_id)
    return out
