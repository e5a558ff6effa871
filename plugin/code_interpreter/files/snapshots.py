"""Saved sessions: each user's session snapshots in GridFS, under the file store's expiry rules.

A snapshot is made inside the sandbox (``inside/_snapshot.py``) and is opaque bytes here: the host
never unpickles it. One document per (user, session) in ``session_snapshots`` names its blob in the
``session_blobs`` bucket, with its size and sha256; a save writes the new blob first, then points the
document at it, then deletes the old blob, so a crash never leaves a session without a snapshot it
acknowledged. On load the document is found by user *and* session id, and the bytes must match the
recorded size and sha256 and the blob id must carry the owner's prefix, or the snapshot is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..settings import Settings
from .blobs import CODEC, BlobStore, BlobTooLarge
from .names import safe_id_part

__all__ = ["SNAPSHOT_BUCKET", "SNAPSHOT_COLLECTION", "SnapshotRefused", "SnapshotStore"]

SNAPSHOT_COLLECTION = "session_snapshots"
SNAPSHOT_BUCKET = "session_blobs"
Retry = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]


class SnapshotRefused(Exception):
    """A stored snapshot that may not be used (corrupt, or not this session's); the message says why."""


def _prefix(user_id: str, session_id: str) -> str:
    digest = hashlib.sha256(f"{user_id}\x00{session_id}".encode()).hexdigest()[:24]
    return f"snap_{safe_id_part(user_id)}_{digest}_"


class SnapshotStore:
    """Save, load, delete and expire session snapshots (async)."""

    def __init__(
        self, db: AsyncDatabase[Any], settings: Settings, retry: Retry, clock: Callable[[], datetime]
    ) -> None:
        self.meta = db.get_collection(SNAPSHOT_COLLECTION, codec_options=CODEC)
        self.blobs = BlobStore(db, SNAPSHOT_BUCKET, retry)
        self.settings = settings
        self._retry = retry
        self._clock = clock

    async def ensure_indexes(self) -> None:
        """Unique (user_id, session_id), expires_at, and GridFS's indexes."""
        await self._retry(
            lambda: self.meta.create_index([("user_id", 1), ("session_id", 1)], unique=True), "create index"
        )
        await self._retry(lambda: self.meta.create_index("expires_at"), "create index")
        await self.blobs.ensure_indexes()

    def _expiry(self, now: datetime) -> datetime | None:
        ttl = self.settings.file_ttl_seconds
        return now + timedelta(seconds=ttl) if ttl is not None else None

    async def save(self, user_id: str, session_id: str, data: bytes, notes: list[str]) -> dict[str, Any]:
        """Store ``data`` as the session's snapshot (replacing the previous one); returns its document."""
        now = self._clock()
        blob_id = _prefix(user_id, session_id) + secrets.token_hex(8)
        cap = self.settings.max_snapshot_bytes
        try:
            written = await self.blobs.write(
                blob_id, data, cap, f"session {session_id}", {"user_id": user_id}
            )
        except BlobTooLarge:
            raise SnapshotRefused(
                f"the snapshot is over the {self.settings.max_snapshot_bytes / 2**20:g} MB cap"
            ) from None
        fields = {"blob_id": blob_id, "size": written.size, "sha256": written.sha256, "saved_at": now,
                  "expires_at": self._expiry(now), "notes": notes[:20]}  # fmt: skip
        try:
            old = await self._retry(
                lambda: self.meta.find_one_and_update(
                    {"user_id": user_id, "session_id": session_id},
                    {"$set": fields, "$setOnInsert": {"created_at": now}},
                    upsert=True,
                    return_document=ReturnDocument.BEFORE,
                ),
                "save the session",
            )
        except BaseException:
            await self.blobs.discard([blob_id])
            raise
        if old is not None and old.get("blob_id") and old["blob_id"] != blob_id:
            await self.blobs.delete([old["blob_id"]])
        return {"user_id": user_id, "session_id": session_id, **fields}

    async def find(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        """The session's unexpired snapshot document, or None."""
        now = self._clock()
        doc: dict[str, Any] | None = await self._retry(
            lambda: self.meta.find_one(
                {
                    "user_id": user_id,
                    "session_id": session_id,
                    "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}],
                }
            ),
            "find the saved session",
        )
        return doc

    async def load(self, user_id: str, session_id: str) -> bytes | None:
        """The session's snapshot bytes; None when there is none. SnapshotRefused when it may not be used."""
        doc = await self.find(user_id, session_id)
        if doc is None:
            return None
        blob_id = str(doc.get("blob_id") or "")
        if not blob_id.startswith(_prefix(user_id, session_id)):
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

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Forget the session's snapshot; True if there was one."""
        doc = await self._retry(
            lambda: self.meta.find_one_and_delete({"user_id": user_id, "session_id": session_id}),
            "delete the saved session",
        )
        if doc is None:
            return False
        if doc.get("blob_id"):
            await self.blobs.delete([doc["blob_id"]])
        return True

    async def cleanup_expired(self) -> int:
        """Delete expired snapshots (document first, then bytes); returns how many."""
        now = self._clock()
        docs = await self._retry(
            lambda: self.meta.find({"expires_at": {"$ne": None, "$lte": now}}, {"blob_id": 1}).to_list(None),
            "find expired sessions",
        )
        ids = [d["_id"] for d in docs]
        if not ids:
            return 0
        await self._retry(lambda: self.meta.delete_many({"_id": {"$in": ids}}), "delete expired sessions")
        await self.blobs.delete([d["blob_id"] for d in docs if d.get("blob_id")])
        return len(ids)
