"""SessionStore: each session's ownership lease and its saved snapshot, in one MongoDB document.

The document and its updates are described in :mod:`.leases`. What this module adds:

- **Operations** (async, each one atomic ``findAndModify`` under the storage retries): :meth:`acquire`,
  :meth:`request_handoff`, :meth:`renew`, :meth:`release`, :meth:`owned_by`, :meth:`save_snapshot`
  (fenced by owner and epoch), :meth:`load`, :meth:`list_saved`, :meth:`delete`, :meth:`cleanup_expired`.
- **Durability.** Lease and snapshot writes use ``{w: "majority", j: true}``: acknowledged by a majority
  of a replica set and journaled. A standalone mongod accepts ``majority`` as itself; SecantusDB calls
  itself a one-member replica set ``secantus``, acknowledges ``majority`` at once and fsyncs only for
  ``j: true`` (without it, a kill -9 of the server loses the last acknowledged writes).
- **Snapshots are storage.** Their bytes count against the user's ``max_bytes_per_user`` with the
  user's files (:mod:`.quota`), and a user keeps at most ``max_saved_sessions_per_user`` saved sessions:
  a save over it expires the user's oldest saved ones first. A live session's snapshot is never evicted.
- **Bytes.** A save writes the new blob first, then points the record at it (the fenced update), then
  deletes the old blob, so a crash never leaves a session without the snapshot it acknowledged. A blob
  the record never came to point at (a refused or interrupted save) is deleted by :meth:`cleanup_expired`
  once it is an hour old. On load the blob id must carry the owner's prefix and the bytes must match the
  recorded size and sha256, or the snapshot is refused.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pymongo import ReturnDocument, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError, WriteConcernError

from ..errors import FileStoreError, LeaseLost, SnapshotRefused, StorageUnavailable
from ..settings import Settings
from ..storage.retry import context_for
from . import leases as L
from .blobs import CODEC, BlobStore, BlobTooLarge
from .leases import Lease, SavedSession, check_host, check_session, check_user, fence, lease_from
from .names import safe_id_part
from .quota import ItemSource, StoredItem, room_for_snapshot
from .records import mb

__all__ = ["SNAPSHOT_BUCKET", "SNAPSHOT_COLLECTION", "SessionStore", "blob_prefix"]

log = logging.getLogger(__name__)

SNAPSHOT_COLLECTION = "session_snapshots"
SNAPSHOT_BUCKET = "session_blobs"
ORPHAN_GRACE_S = 3600.0  # a save in progress holds a blob the record does not name yet, for minutes at most
MAJORITY_TIMEOUT_MS = 10_000  # a replica set that cannot confirm a write this fast has lost its majority
FENCED = WriteConcern(w="majority", j=True, wtimeout=MAJORITY_TIMEOUT_MS)
MAX_NOTES = 20
Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]


def blob_prefix(user_id: str, session_id: str) -> str:
    """Every snapshot blob of this user and session starts with it (checked on load)."""
    digest = hashlib.sha256(f"{user_id}\x00{session_id}".encode()).hexdigest()[:24]
    return f"snap_{safe_id_part(user_id)}_{digest}_"


class SessionStore:
    """Ownership leases and saved snapshots of sessions, shared by every host using the database."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        retry: Retry | None = None,
        files: ItemSource | None = None,
    ) -> None:
        """Args:
        clock: None (production) decides every expiry on the database server's clock; a function
            returning aware UTC datetimes replaces it (tests move time without sleeping).
        retry: runs an operation under bounded retries (default: the client's registered policy).
        files: the user's files, counted with snapshots against the quota (the FileManager).
        """
        self.settings = settings
        self.meta = db.get_collection(SNAPSHOT_COLLECTION, codec_options=CODEC)
        """The records (one per user and session)."""
        self._fenced = self.meta.with_options(write_concern=FENCED)
        self._retry: Retry = retry or _default_retry(db)
        self.blobs = BlobStore(db, SNAPSHOT_BUCKET, self._retry)
        """The snapshots' bytes (GridFS bucket ``session_blobs``)."""
        self._clock = clock
        self._files = files

    @property
    def lease_s(self) -> float:
        """How long a lease lasts unless renewed (``settings.session_lease_s``)."""
        return self.settings.session_lease_s

    async def ensure_indexes(self) -> None:
        """Unique (user_id, session_id); expires_at; owner (hand-off requests); GridFS's."""
        await self._retry(
            lambda: self.meta.create_index([("user_id", 1), ("session_id", 1)], unique=True), "create index"
        )
        await self._retry(lambda: self.meta.create_index("expires_at"), "create index")
        await self._retry(lambda: self.meta.create_index("owner"), "create index")
        await self.blobs.ensure_indexes()

    # -- the lease -------------------------------------------------------------------------------------
    async def acquire(self, user_id: int | str, session_id: str, host: str) -> Lease:
        """Take the session's lease if it is free, ran out, or is already ``host``'s (epoch + 1 each time).

        Returns the lease either way: ``held`` says whether ``host`` owns it now; if not, ``owner`` and
        ``expires_at`` say who does and until when. Creates the session's record on first use.
        """
        return await self._take(
            check_user(user_id), check_session(session_id), check_host(host), want_handoff=False
        )

    async def request_handoff(self, user_id: int | str, session_id: str, host: str) -> Lease:
        """Take the lease as :meth:`acquire` does; when another host holds it, ask that host to save and
        release (it sees the request in :meth:`owned_by` and in its renewals). Call again to poll."""
        return await self._take(
            check_user(user_id), check_session(session_id), check_host(host), want_handoff=True
        )

    async def renew(self, lease: Lease, cells: int | None = None) -> Lease:
        """Extend ``lease`` by ``session_lease_s`` from now, recording the cell counter ``cells``.

        Succeeds while ``lease.host`` is still the owner at ``lease.epoch``, even past the expiry when
        nobody took the session meanwhile. The returned lease carries any hand-off request.

        Raises:
            LeaseLost: another host took the session over, or it was released or reset.
        """
        renewed = await self._fenced_update(
            lease,
            lambda now: L.renew_update(now=now, lease_s=self.lease_s, keep_s=self._keep_s, cells=cells),
            "renew its lease",
        )
        return renewed.lease

    async def release(self, lease: Lease, cells: int | None = None, unsaved: str | None = None) -> bool:
        """Give the session up (after saving it) so another host may take it; False if it was not held.

        ``unsaved`` says why its last state could not be saved (the next take reports it)."""
        update = L.release_update(now=self._now(), keep_s=self._keep_s, cells=cells, unsaved=unsaved)
        result = await self._retry(
            lambda: _majority(self._fenced.update_one(fence(lease), update)), "release the session"
        )
        return bool(result.matched_count)

    async def owned_by(self, host: str) -> list[Lease]:
        """Every session the records say ``host`` owns, with any hand-off request (one query for all):
        a session ``host`` thinks it holds and is missing here was taken over or reset."""
        query = {"owner": check_host(host)}
        fields = {"blob_id": 0, "notes": 0, "sha256": 0}
        docs = await self._retry(lambda: self.meta.find(query, fields).to_list(None), "find owned sessions")
        return [lease_from(d, host, 0.0) for d in docs]

    # -- the snapshot ----------------------------------------------------------------------------------
    async def save_snapshot(
        self, lease: Lease, data: bytes, notes: list[str], cell: int | None = None
    ) -> Lease:
        """Store ``data`` as the session's snapshot, made after cell ``cell``, fenced by ``lease``.

        The new snapshot replaces the old one only if ``lease.host`` still owns the session at
        ``lease.epoch``; the user's saved-session cap and quota are applied first. A save is also a
        renewal: the returned lease runs ``session_lease_s`` from now.

        Raises:
            LeaseLost: the session was taken over (or reset): nothing was saved, the new owner's
                snapshot is untouched.
            SnapshotRefused: the snapshot is over ``max_snapshot_bytes``.
            QuotaExceeded: it does not fit the user's storage quota (under ``quota_policy="refuse"``,
                or when only live sessions could make room).
        """
        cap = self.settings.max_snapshot_bytes
        if len(data) > cap:
            raise SnapshotRefused(
                f"the snapshot ({mb(len(data))}) is over the {cap / 2**20:g} MB cap "
                "(max_snapshot_bytes): keep less in the session, or raise the cap"
            )
        # A host that lost the session learns it before it evicts anything or writes the bytes (the
        # fenced update below still decides: the lease may be taken while the bytes are written).
        if await self._retry(lambda: self.meta.find_one(fence(lease), {"_id": 1}), "check the lease") is None:
            raise await self._lost(lease, "save it")
        await room_for_snapshot(lease.user_id, lease.session_id, len(data), self.settings, self, self._files)
        blob_id = blob_prefix(lease.user_id, lease.session_id) + secrets.token_hex(8)
        try:
            blob = await self.blobs.write(
                blob_id, data, cap, f"session {lease.session_id}", {"user_id": lease.user_id}
            )
        except BlobTooLarge:  # pragma: no cover - the size was checked above
            raise SnapshotRefused(f"the snapshot is over the {cap / 2**20:g} MB cap") from None
        text = [str(n) for n in notes[:MAX_NOTES]]

        def update(now: Any) -> list[dict[str, Any]]:
            return L.save_update(
                now=now, lease_s=self.lease_s, keep_s=self._keep_s, blob_id=blob_id, size=blob.size,
                sha256=blob.sha256, epoch=lease.epoch, cell=cell, notes=text,
            )  # fmt: skip

        try:
            saved = await self._fenced_update(lease, update, "save it")
        except LeaseLost:
            await self.blobs.discard([blob_id])
            raise
        # Any other error leaves both blobs: the record may name either, and the orphan sweep deletes
        # the one it does not, whereas deleting one here could leave a record without its bytes.
        if saved.replaced_blob_id and saved.replaced_blob_id != blob_id:
            await self.blobs.delete([saved.replaced_blob_id])
        return saved.lease

    async def find(self, user_id: int | str, session_id: str) -> dict[str, Any] | None:
        """The session's unexpired record (lease and snapshot fields), or None."""
        query = {
            "user_id": check_user(user_id),
            "session_id": check_session(session_id),
            "$expr": L.visible_expr(self._now()),
        }
        doc: dict[str, Any] | None = await self._retry(lambda: self.meta.find_one(query), "find the session")
        return doc

    async def load(self, user_id: int | str, session_id: str) -> bytes | None:
        """The session's snapshot bytes; None when there is none.

        Raises:
            SnapshotRefused: the bytes are missing, do not match the recorded size and sha256, or the
                record names a blob that is not this user's and session's.
        """
        uid, sid = check_user(user_id), check_session(session_id)
        doc = await self.find(uid, sid)
        if doc is None or not doc.get("blob_id"):
            return None
        blob_id = str(doc["blob_id"])
        if not blob_id.startswith(blob_prefix(uid, sid)):
            raise SnapshotRefused("the stored snapshot does not belong to this user and session")
        chunks = await self.blobs.chunks_of(blob_id)
        if chunks is None:
            raise SnapshotRefused("the stored snapshot's bytes are missing")
        hasher = hashlib.sha256()
        parts = []
        async for part in chunks:
            hasher.update(part)
            parts.append(part)
        data = b"".join(parts)
        if len(data) != doc.get("size") or hasher.hexdigest() != doc.get("sha256"):
            raise SnapshotRefused("the stored snapshot is corrupt (its size or checksum does not match)")
        return data

    async def list_saved(self, user_id: int | str) -> list[SavedSession]:
        """The user's sessions that are live on some host or saved, by session id."""
        rows = await self._rows({"user_id": check_user(user_id)})
        found = [L.saved_from(r) for r in rows if r["live"] or r.get("blob_id")]
        return sorted(found, key=lambda s: s.session_id)

    async def delete(self, user_id: int | str, session_id: str) -> bool:
        """Reset: forget the snapshot and end any live lease (its owner's next renewal raises LeaseLost).

        Returns True when there was a snapshot or an owner.
        """
        return await self._reset({"user_id": check_user(user_id), "session_id": check_session(session_id)})

    async def cleanup_expired(self, orphan_grace_s: float = ORPHAN_GRACE_S) -> int:
        """Delete expired records that no live lease holds (record, then bytes); returns how many.

        Also deletes snapshot blobs older than ``orphan_grace_s`` (real time) that no record names.
        """
        now = self._now()
        ended = {"$and": [{"$lte": ["$expires_at", now]}, {"$not": [L.live_expr(now)]}]}
        query = {"expires_at": {"$ne": None}, "$expr": ended}
        docs = await self._retry(
            lambda: self.meta.find(query, {"blob_id": 1}).to_list(None), "find expired sessions"
        )
        gone: list[dict[str, Any]] = []
        if docs:
            ids = [d["_id"] for d in docs]
            await self._retry(
                lambda: self._fenced.delete_many({"_id": {"$in": ids}, **query}), "delete sessions"
            )
            kept = set(
                await self._retry(lambda: self.meta.distinct("_id", {"_id": {"$in": ids}}), "check sessions")
            )
            gone = [d for d in docs if d["_id"] not in kept]  # those renewed meanwhile were not deleted
            await self.blobs.delete([d["blob_id"] for d in gone if d.get("blob_id")])
        await self._sweep_orphans(orphan_grace_s)
        return len(gone)

    async def totals(self) -> dict[str, int]:
        """Saved sessions of all users and their bytes: ``{"sessions": n, "bytes": b}``."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"blob_id": {"$ne": None}}},
            {"$group": {"_id": None, "n": {"$sum": 1}, "bytes": {"$sum": "$size"}}},
        ]

        async def op() -> list[dict[str, Any]]:
            cursor = await self.meta.aggregate(pipeline)
            return [d async for d in cursor]

        rows: list[dict[str, Any]] = await self._retry(op, "count saved sessions")
        return (
            {"sessions": int(rows[0]["n"]), "bytes": int(rows[0]["bytes"])}
            if rows
            else {"sessions": 0, "bytes": 0}
        )

    # -- the quota (this store is an ItemSource too) --------------------------------------------------
    async def quota_items(self, user_id: str) -> list[StoredItem]:
        """The user's unexpired snapshots as the quota counts them (a live session's is not evictable)."""
        rows = await self._rows({"user_id": user_id, "blob_id": {"$ne": None}})
        return [
            StoredItem("session", r["session_id"], int(r.get("size") or 0), L.stored_at(r), not r["live"])
            for r in rows
        ]

    async def evict_items(self, user_id: str, keys: list[str]) -> None:
        """Forget these saved sessions of the user (to make room), unless one became live meanwhile."""
        for sid in keys:
            await self._reset(
                {"user_id": user_id, "session_id": sid, "blob_id": {"$ne": None}}, unless_live=True
            )

    # -- internals ---------------------------------------------------------------------------------------
    @property
    def _keep_s(self) -> float | None:
        return self.settings.file_ttl_seconds

    def _now(self) -> Any:
        """The expression for "now": the server's clock, or the injected clock's value."""
        if self._clock is None:
            return L.SERVER_NOW
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes (UTC)")
        now = now.astimezone(UTC)
        return {"$literal": now.replace(microsecond=now.microsecond // 1000 * 1000)}

    async def _take(self, uid: str, sid: str, host: str, *, want_handoff: bool) -> Lease:
        stamp = [0.0]

        async def op() -> dict[str, Any] | None:
            stamp[0] = time.monotonic()
            now = self._now()
            update = L.acquire_update(
                host, now=now, lease_s=self.lease_s, keep_s=self._keep_s, want_handoff=want_handoff
            )
            where = {"user_id": uid, "session_id": sid}
            return await _majority(self._fenced.find_one_and_update(where, update, return_document=AFTER))

        for _ in range(3):
            doc = await self._retry(op, "take the session's lease")
            if doc is not None:
                return lease_from(doc, host, stamp[0] + self.lease_s)
            await self._create(uid, sid)
        raise FileStoreError(f"the record of session {sid!r} keeps disappearing (reset or expired meanwhile)")

    async def _create(self, uid: str, sid: str) -> None:
        """The session's record, free at epoch 0, unless it exists.

        Not an upsert of the findAndModify itself: two hosts inserting at once may get a duplicate-key
        error from MongoDB, and SecantusDB 0.7.0b3 sometimes answers ``null`` to the loser while
        applying its update. A plain upsert whose duplicate-key loser is ignored leaves one record.
        """
        update = L.create_update(now=self._now())

        async def op() -> None:
            try:
                await _majority(
                    self._fenced.update_one({"user_id": uid, "session_id": sid}, update, upsert=True)
                )
            except DuplicateKeyError:
                pass  # another host created it: that is all we wanted

        await self._retry(op, "create the session's record")

    async def _fenced_update(
        self, lease: Lease, update: Callable[[Any], list[dict[str, Any]]], what: str
    ) -> _Saved:
        """Apply ``update`` only where ``lease`` still holds; LeaseLost when it does not."""
        stamp = [0.0]

        async def op() -> dict[str, Any] | None:
            stamp[0] = time.monotonic()
            change = update(self._now())
            return await _majority(
                self._fenced.find_one_and_update(fence(lease), change, return_document=AFTER)
            )

        doc = await self._retry(op, f"{what} (session {lease.session_id})")
        if doc is None:
            raise await self._lost(lease, what)
        return _Saved(lease_from(doc, lease.host, stamp[0] + self.lease_s), doc.get("replaced_blob_id"))

    async def _lost(self, lease: Lease, what: str) -> LeaseLost:
        where = {"user_id": lease.user_id, "session_id": lease.session_id}
        doc = await self._retry(lambda: self.meta.find_one(where), "read the session's lease")
        owner, epoch = (doc.get("owner"), int(doc.get("epoch") or 0)) if doc else (None, None)
        if owner is not None and owner != lease.host:
            why = f"host {owner} took it over (epoch {epoch})"
        elif owner is not None:
            why = f"this host took it again since (epoch {epoch})"
        else:
            why = "it was released or reset since"
        return LeaseLost(
            f"session {lease.session_id!r} of user {lease.user_id!r} is no longer this host's "
            f"({lease.host}, epoch {lease.epoch}), so it could not {what}: {why}. Stop this copy without "
            "saving it; the next cell continues from the session's saved state.",
            owner,
            epoch,
        )

    async def _rows(self, match: dict[str, Any]) -> list[dict[str, Any]]:
        now = self._now()
        pipeline = [
            {"$match": {**match, "$expr": L.visible_expr(now)}},
            {"$addFields": {"live": L.live_expr(now)}},
        ]

        async def op() -> list[dict[str, Any]]:
            cursor = await self.meta.aggregate(pipeline)
            return [d async for d in cursor]

        rows: list[dict[str, Any]] = await self._retry(op, "list saved sessions")
        return rows

    async def _reset(self, query: dict[str, Any], *, unless_live: bool = False) -> bool:
        now = self._now()
        if unless_live:
            query = {**query, "$expr": {"$not": [L.live_expr(now)]}}
        update = L.reset_update(now=now)
        old = await self._retry(
            lambda: _majority(self._fenced.find_one_and_update(query, update, return_document=BEFORE)),
            "reset the session",
        )
        if old is None:
            return False
        if old.get("blob_id"):
            await self.blobs.delete([old["blob_id"]])
        return bool(old.get("blob_id") or old.get("owner"))

    async def _sweep_orphans(self, grace_s: float) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)  # real time, as BlobStore stamps uploads
        old = await self._retry(
            lambda: self.blobs.files.distinct("_id", {"uploadDate": {"$lt": cutoff}}), "find old snapshots"
        )
        for i in range(0, len(old), 500):
            named = await self._retry(
                partial(self.meta.distinct, "blob_id", {"blob_id": {"$in": old[i : i + 500]}}),
                "check snapshots",
            )
            batch = old[i : i + 500]
            orphans = sorted(set(batch) - set(named))
            if orphans:
                log.info("deleting %d snapshot blob(s) no session names", len(orphans))
                await self.blobs.delete(orphans)


# -- helpers ---------------------------------------------------------------------------------------------

AFTER, BEFORE = ReturnDocument.AFTER, ReturnDocument.BEFORE


@dataclass(frozen=True, slots=True)
class _Saved:
    lease: Lease
    replaced_blob_id: str | None


async def _majority(op: Awaitable[Any]) -> Any:
    """Run a fenced write; a replica set that cannot confirm it on a majority is unavailable (not a no)."""
    try:
        return await op
    except WriteConcernError as exc:
        raise StorageUnavailable(
            f"the database did not confirm a session write on a majority of the replica set within "
            f"{MAJORITY_TIMEOUT_MS / 1000:.0f} s ({exc}); check the replica set's health"
        ) from exc


def _default_retry(db: AsyncDatabase[Any]) -> Retry:
    ctx = context_for(db)
    server = ctx.server or "MongoDB"

    async def run(op: Callable[[], Awaitable[Any]], what: str) -> Any:
        try:
            return await ctx.run(op, what)
        except PyMongoError as exc:  # not transient: the server refused the operation
            raise FileStoreError(f"MongoDB at {server} refused to {what}: {exc}") from exc

    return run
